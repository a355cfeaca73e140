"""Accuracy-aware int8 (`--accuracy-goal`): rank the quantizable operators by how much int8 hurts them,
then keep the fewest most-sensitive ones in fp32 that bring every language within the goal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from kdcompress.deploy.int8_scheme import Int8Scheme, QuantizationSpec

#: Never fall back more than this share of the operators: past it the model is no longer an int8 model.
MAX_FALLBACK_FRACTION = 0.5


@dataclass(frozen=True)
class QuantCandidate:
    """A node the quantizer would turn int8: its weight, and the activation multiplied by it."""

    node: str
    op_type: str
    weight: str
    activation: str | None  # None for embedding lookups (weight-only error)
    transposed: bool = False  # Gemm with transB: the weight is stored [out, in]


def quantization_candidates(model_path: Path, spec: QuantizationSpec) -> list[QuantCandidate]:
    """Nodes with a constant float weight of the op types `spec` quantizes, in graph order.

    Names are the ones `nodes_to_exclude` must use: in dynamic mode ORT first rewrites each
    Gemm (BERT's pooler and classifier) into a MatMul named `<gemm>_MatMul` and quantizes it.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    floats = {init.name for init in model.graph.initializer
              if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    wanted = set(spec.op_types)
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Attention") and node.op_type in wanted and len(node.input) > 1 \
                and node.input[1] in floats:
            out.append(QuantCandidate(node.name, node.op_type, node.input[1], node.input[0]))
        elif node.op_type == "Gemm" and spec.mode == "dynamic" and node.input[1] in floats and node.name:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0):
                out.append(QuantCandidate(f"{node.name}_MatMul", "Gemm", node.input[1], node.input[0],
                                          transposed=bool(attrs.get("transB", 0))))
        elif node.op_type == "Gather" and node.op_type in wanted and node.input[0] in floats:
            out.append(QuantCandidate(node.name, node.op_type, node.input[0], None))
        elif node.op_type == "EmbedLayerNormalization" and node.op_type in wanted and len(node.input) > 2 \
                and node.input[2] in floats:
            out.append(QuantCandidate(node.name, node.op_type, node.input[2], None))
    return out


def _fake_quantize(data: np.ndarray, qtype_name: str, *, symmetric: bool, reduce_range: bool,
                   axis: int | None = None) -> np.ndarray:
    """Quantize then dequantize with onnxruntime's own parameter maths (per tensor or per `axis`)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quant_utils import quantize_data

    qtype = QuantType[qtype_name].tensor_type
    if axis is None:
        zero_point, scale, q = quantize_data(data.ravel(), qtype, symmetric, reduce_range)
        return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).reshape(data.shape)
    moved = np.moveaxis(data, axis, 0)
    out = np.empty_like(moved, dtype=np.float32)
    for channel in range(moved.shape[0]):
        zero_point, scale, q = quantize_data(moved[channel].ravel(), qtype, symmetric, reduce_range)
        dequantized = (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        out[channel] = dequantized.reshape(moved[channel].shape)
    return np.moveaxis(out, 0, axis)


def _sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return float(compute_signal_to_quantization_noice_ratio(reference, approx))


def rank_by_sensitivity(fp32_model: Path, candidates: Sequence[QuantCandidate], scheme: Int8Scheme,
                        feeds: Sequence[Mapping[str, np.ndarray]], workdir: Path) -> list[tuple[QuantCandidate, float]]:
    """Order `candidates` from most to least sensitive to int8 (lowest signal-to-noise first).

    For each node, the error its own quantization adds: its fp32 input activations (captured
    on `feeds`) and weight are quantized as onnxruntime would quantize them, multiplied, and
    compared with the fp32 product. A local proxy - one fp32 pass instead of one quantize and
    evaluation per node - but it finds the usual culprits (post-GELU FFN outputs with outlier
    activations) in seconds. ORT's qdq_loss_debug only pairs QDQ models, not dynamic ones, so
    the error maths reuses its pieces instead: ORT's `quantize_data` and SQNR.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    activations = sorted({c.activation for c in candidates if c.activation})
    model = onnx.load(str(fp32_model))
    weights = {init.name: init for init in model.graph.initializer}
    # Intermediate tensors may be graph outputs as they are, so one run captures every input.
    existing = {o.name for o in model.graph.output}
    for name in activations:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    capture = workdir / "sensitivity_capture.onnx"
    onnx.save(model, str(capture))
    del model
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(str(capture), options, providers=["CPUExecutionProvider"])
    captured: dict[str, list[np.ndarray]] = {name: [] for name in activations}
    for feed in feeds:
        for name, value in zip(activations, session.run(activations, dict(feed)), strict=True):
            captured[name].append(value)
    del session
    capture.unlink(missing_ok=True)

    ranked = []
    for cand in candidates:
        weight = numpy_helper.to_array(weights[cand.weight]).astype(np.float32)
        if cand.transposed:
            weight = np.ascontiguousarray(weight.T)
        if cand.activation is None:
            # Embedding tables are quantized per tensor with the activation type (ORT's GatherQuant).
            approx = _fake_quantize(weight, "QUInt8", symmetric=False, reduce_range=False)
            ranked.append((cand, _sqnr_db(weight, approx)))
            continue
        weight_q = _fake_quantize(weight, scheme.weight_type, symmetric=True, reduce_range=scheme.reduce_range,
                                  axis=-1 if scheme.per_channel else None)
        reference, approx = [], []
        for batch in captured[cand.activation]:
            x = batch.reshape(-1, weight.shape[0])
            # Dynamic quantization picks each run's range (DynamicQuantizeLinear: u8, range includes 0).
            x_q = _fake_quantize(x, "QUInt8", symmetric=False, reduce_range=False)
            reference.append(x @ weight)
            approx.append(x_q @ weight_q)
        ranked.append((cand, _sqnr_db(np.concatenate(reference), np.concatenate(approx))))
    ranked.sort(key=lambda item: item[1])
    return ranked


@dataclass
class SearchTrial:
    fallback_nodes: list[str]
    accuracy: dict[str, float]
    drops: dict[str, float]
    meets_goal: bool

    @property
    def worst_drop(self) -> float:
        return max(self.drops.values()) if self.drops else 0.0

    @property
    def worst_language(self) -> str | None:
        return max(self.drops, key=self.drops.get) if self.drops else None


@dataclass
class SearchResult:
    goal: float
    reference_accuracy: dict[str, float]
    sensitivity: list[tuple[str, float]]
    trials: list[SearchTrial] = field(default_factory=list)
    chosen: int | None = None  # index into trials
    goal_met: bool = False

    @property
    def best(self) -> SearchTrial:
        return self.trials[self.chosen]

    def fallback_record(self) -> dict:
        """What the int8 control records of a fewest-fp32-operators search: the kept fallback, every trial,
        and the most sensitive operators."""
        return {"fp32_fallback_nodes": list(self.best.fallback_nodes),
                "search": [{"fallback": len(t.fallback_nodes), "worst_shortfall": t.worst_drop,
                            "failing": sorted(l for l, d in t.drops.items() if d > 1e-9)} for t in self.trials],
                "sensitivity_sqnr_db": [{"node": n, "sqnr_db": round(s, 2)} for n, s in self.sensitivity[:20]]}

    def to_json(self) -> dict:
        best = self.best
        return {
            "goal": self.goal,
            "goal_met": self.goal_met,
            "meaning": "every language's dev accuracy within `goal` (absolute) of the fp32 ONNX model",
            "fp32_accuracy": self.reference_accuracy,
            "int8_accuracy": best.accuracy,
            "drop": best.drops,
            "worst_language": best.worst_language,
            "worst_drop": best.worst_drop,
            "fp32_fallback_nodes": best.fallback_nodes,
            "sensitivity_sqnr_db": [{"node": n, "sqnr_db": round(s, 2)} for n, s in self.sensitivity],
            "trials": [{"fallback": len(t.fallback_nodes), "accuracy": t.accuracy, "worst_drop": t.worst_drop,
                        "meets_goal": t.meets_goal} for t in self.trials],
        }


def fallback_schedule(n_candidates: int, max_fallback: int) -> list[int]:
    """Fallback counts to try first: 0, 1, 2, 4, ... up to `max_fallback` (then bisected)."""
    counts, k = [0], 1
    while k < max_fallback:
        counts.append(k)
        k *= 2
    if max_fallback > 0:
        counts.append(min(max_fallback, n_candidates))
    return sorted(set(counts))


def accuracy_aware_search(*, goal: float, ranked: Sequence[tuple[QuantCandidate, float]],
                          quantize: Callable[[Sequence[str], Path], None],
                          evaluate: Callable[[Path], dict[str, float]],
                          reference_accuracy: Mapping[str, float], workdir: Path,
                          max_trials: int = 10, on_trial: Callable[[SearchTrial], None] | None = None) -> tuple[SearchResult, Path]:
    """Fall back the most sensitive operators to fp32 until every language is within `goal`.

    Tries 0, 1, 2, 4, ... fallbacks (most sensitive first), then bisects between the last count
    that missed and the first that met the goal, so the model keeps as many int8 operators as
    the goal allows. Never falls back more than MAX_FALLBACK_FRACTION of the operators. Always
    returns a model: the first that meets the goal with the fewest fallbacks, else the one with the
    smallest worst-language drop. (`goal` is checked by ExportConfig.check.)
    """
    names = [cand.node for cand, _ in ranked]
    max_fallback = int(math.floor(len(names) * MAX_FALLBACK_FRACTION))
    result = SearchResult(goal=goal, reference_accuracy=dict(reference_accuracy),
                          sensitivity=[(cand.node, sqnr) for cand, sqnr in ranked])
    models: dict[int, Path] = {}

    def trial(k: int) -> SearchTrial:
        path = workdir / f"trial_{k}.onnx"
        quantize(names[:k], path)
        accuracy = evaluate(path)
        drops = {lang: round(reference_accuracy[lang] - acc, 6) for lang, acc in accuracy.items()}
        t = SearchTrial(fallback_nodes=names[:k], accuracy=accuracy, drops=drops,
                        meets_goal=all(d <= goal + 1e-9 for d in drops.values()))
        result.trials.append(t)
        models[len(result.trials) - 1] = path
        if on_trial:
            on_trial(t)
        return t

    tried: dict[int, SearchTrial] = {}
    lo, hi = None, None  # largest count that missed, smallest that met
    for k in fallback_schedule(len(names), max_fallback):
        if len(result.trials) >= max_trials:
            break
        tried[k] = trial(k)
        if tried[k].meets_goal:
            hi = k
            break
        lo = k
    if hi is not None and lo is not None:
        while hi - lo > 1 and len(result.trials) < max_trials:
            mid = (lo + hi) // 2
            tried[mid] = trial(mid)
            if tried[mid].meets_goal:
                hi = mid
            else:
                lo = mid

    passing = [i for i, t in enumerate(result.trials) if t.meets_goal]
    if passing:
        result.chosen = min(passing, key=lambda i: len(result.trials[i].fallback_nodes))
        result.goal_met = True
    else:
        result.chosen = min(range(len(result.trials)),
                            key=lambda i: (result.trials[i].worst_drop, len(result.trials[i].fallback_nodes)))
    chosen_path = models[result.chosen]
    for i, path in models.items():
        if i != result.chosen:
            path.unlink(missing_ok=True)
    return result, chosen_path

