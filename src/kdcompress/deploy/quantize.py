"""Int8 quantization for CPU serving: dynamic, static (calibrated) and accuracy-aware.

The int8 scheme (weight/activation types, operator format, per-channel, reduce-range) is
picked from the CPU the export runs on, following ONNX Runtime's own guidance (the
`quantize_static` docstring and its quantization guide):

* x86 without VNNI (AVX2, AVX-512F/BW only): the u8 x s8 kernels use VPMADDUBSW, whose
  int16 intermediate sums can saturate, so weights are reduced to 7 bits (`reduce_range`).
* x86 with VNNI (AVX512-VNNI, AVX-VNNI): VPDPBUSD accumulates in int32 - full 8-bit range.
* aarch64: signed 8-bit dot products (SDOT on `asimddp`) have no saturation issue either.

Weights are always signed int8 (QInt8). On the shapes measured for this project, signed
weights ran 19-27% faster than unsigned ones on an AVX2 machine, and 1.7x faster on an
AVX512-VNNI machine (benchmarks/README.md): MLAS's fast kernels are u8 x s8.

Quantization itself is onnxruntime.quantization's `quantize_dynamic` / `quantize_static`;
this module chooses their arguments, and, for `--accuracy-goal`, decides which operators stay
in fp32 (`nodes_to_exclude`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from kdcompress.errors import KDCompressError

# Operator types whose weights we quantize. Attention / EmbedLayerNormalization only exist in
# graphs fused by `--optimize`; ORT quantizes them as QAttention / QEmbedLayerNormalization.
MATMUL_OP_TYPES = ("MatMul", "Attention")
EMBEDDING_OP_TYPES = ("Gather", "EmbedLayerNormalization")


# --- CPU features ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set facts that decide the int8 scheme."""

    arch: str
    model_name: str
    flags: tuple[str, ...]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def vnni(self) -> bool:
        return self.has("avx512_vnni") or self.has("avx_vnni")

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386")

    @property
    def is_arm64(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    def summary(self) -> dict:
        interesting = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
        return {"arch": self.arch, "model_name": self.model_name,
                "flags": {flag: self.has(flag) for flag in interesting}}


def detect_cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """Read the CPU's flags from /proc/cpuinfo (x86 `flags`, aarch64 `Features`)."""
    arch = platform.machine().lower()
    model_name = platform.processor() or arch
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""  # macOS / Windows: no cpuinfo; the scheme falls back to the portable choice
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("model name", "cpu model") and value.strip():
            model_name = value.strip()
    if arch == "arm64" and platform.system() == "Darwin":
        flags.add("asimddp")  # every Apple-silicon core has the dot-product extension
    return CpuFeatures(arch=arch, model_name=model_name, flags=tuple(sorted(flags)))


# --- the int8 scheme --------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Scheme:
    """Arguments for onnxruntime.quantization, and why they were chosen."""

    mode: str                 # "dynamic" or "static"
    quant_format: str         # "QOperator" (dynamic: MatMulInteger) or "QDQ"
    weight_type: str          # onnxruntime.quantization.QuantType name
    activation_type: str
    per_channel: bool
    reduce_range: bool
    reason: str

    @property
    def label(self) -> str:
        a = "u8" if self.activation_type == "QUInt8" else "s8"
        w = "u8" if self.weight_type == "QUInt8" else "s8"
        return f"{self.mode} {a}{w} {self.quant_format}" + (" per-channel" if self.per_channel else "") + (
            " reduce-range" if self.reduce_range else "")


def choose_int8_scheme(cpu: CpuFeatures, mode: str = "dynamic") -> Int8Scheme:
    """The fastest int8 scheme that is safe from saturation on `cpu`."""
    if mode not in ("dynamic", "static"):
        raise KDCompressError(f"unknown quantization mode {mode!r}; choose dynamic or static")
    # Dynamic quantization has one format: DynamicQuantizeLinear (u8 activations) + MatMulInteger.
    # Static uses QDQ, ORT's recommended format since 1.11 (QOperator s8s8 is slow on x86).
    quant_format = "QOperator" if mode == "dynamic" else "QDQ"
    activation_type = "QUInt8"
    # Per-channel weights cost nothing measurable with MLAS (scales are applied per output
    # column after the integer GEMM) and keep small-range columns precise.
    per_channel = True
    if cpu.is_arm64:
        if mode == "static":
            activation_type = "QInt8"  # ARM kernels prefer symmetric s8 activations (ORT guidance)
        reason = ("aarch64" + (" with dot product (asimddp)" if cpu.has("asimddp") else "")
                  + ": signed 8-bit kernels do not saturate, full 8-bit range")
        reduce_range = False
    elif cpu.is_x86 and cpu.vnni:
        vnni = "AVX512-VNNI" if cpu.has("avx512_vnni") else "AVX-VNNI"
        reason = f"x86 with {vnni}: u8 x s8 accumulates in int32 without saturation, full 8-bit range"
        reduce_range = False
    elif cpu.is_x86:
        isa = "AVX-512 without VNNI" if cpu.has("avx512bw") else ("AVX2 without VNNI" if cpu.has("avx2") else "SSE")
        reason = (f"x86 {isa}: u8 x s8 uses VPMADDUBSW, whose int16 sums can saturate, "
                  "so weights are reduced to 7 bits")
        reduce_range = True
    else:
        reason = f"{cpu.arch}: unknown CPU; 7-bit weights are the safe choice"
        reduce_range = True
    return Int8Scheme(mode=mode, quant_format=quant_format, weight_type="QInt8",
                      activation_type=activation_type, per_channel=per_channel,
                      reduce_range=reduce_range, reason=reason)


def op_types_to_quantize(*, quantize_embeddings: bool) -> list[str]:
    return list(MATMUL_OP_TYPES) + (list(EMBEDDING_OP_TYPES) if quantize_embeddings else [])


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's root-logger chatter (pre-processing hints and the like)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _extra_options(scheme: Int8Scheme) -> dict:
    import onnx

    return {
        # Only weights (constant B) are quantized: the two activation x activation MatMuls of
        # attention lose too much precision in 8 bits, and dynamic mode cannot do them anyway.
        "MatMulConstBOnly": True,
        # Graphs fused by --optimize contain com.microsoft ops (Attention, SkipLayerNormalization)
        # that ONNX shape inference cannot type; without a default the quantizer stops with
        # "Unable to find data type".
        "DefaultTensorType": onnx.TensorProto.FLOAT,
        "WeightSymmetric": True,
        # u8 activations keep asymmetric ranges (post-GELU values are mostly positive);
        # s8 activations (the ARM static choice) are symmetric.
        "ActivationSymmetric": scheme.activation_type == "QInt8",
    }


def quantize_dynamic_int8(src: Path, dst: Path, scheme: Int8Scheme, *, quantize_embeddings: bool = True,
                          nodes_to_exclude: Sequence[str] = ()) -> None:
    """Dynamic int8: weights quantized offline, activations per run (no calibration data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantizer():
        quantize_dynamic(
            str(src), str(dst),
            op_types_to_quantize=op_types_to_quantize(quantize_embeddings=quantize_embeddings),
            per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            weight_type=QuantType[scheme.weight_type],
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options=_extra_options(scheme),
        )


class FeedReader:
    """onnxruntime's CalibrationDataReader over a list of ready-made feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._iter = iter(self._feeds)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)

    def __iter__(self):
        return iter(self._feeds)


def quantize_static_int8(src: Path, dst: Path, scheme: Int8Scheme,
                         calibration_feeds: Sequence[Mapping[str, np.ndarray]], *,
                         quantize_embeddings: bool = True, nodes_to_exclude: Sequence[str] = ()) -> None:
    """Static int8 (QDQ): activation ranges calibrated (min-max) on `calibration_feeds`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration_feeds:
        raise KDCompressError("static quantization needs calibration examples; pass --calibration-data")
    options = _extra_options(scheme)
    # Keep memory flat on base-size models: merge ranges every 16 batches instead of holding
    # every intermediate tensor of every calibration batch.
    options["CalibMaxIntermediateOutputs"] = 16
    with quiet_quantizer():
        quantize_static(
            str(src), str(dst), FeedReader(calibration_feeds),
            quant_format=QuantFormat[scheme.quant_format],
            op_types_to_quantize=op_types_to_quantize(quantize_embeddings=quantize_embeddings),
            per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            activation_type=QuantType[scheme.activation_type],
            weight_type=QuantType[scheme.weight_type],
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=options,
        )


# --- accuracy-aware int8 ----------------------------------------------------------------------

@dataclass(frozen=True)
class QuantCandidate:
    """A node the quantizer would turn int8: its weight, and the activation multiplied by it."""

    node: str
    op_type: str
    weight: str
    activation: str | None  # None for embedding lookups (weight-only error)
    transposed: bool = False  # Gemm with transB: the weight is stored [out, in]


def quantization_candidates(model_path: Path, *, mode: str = "dynamic",
                            quantize_embeddings: bool = True) -> list[QuantCandidate]:
    """Nodes with a constant float weight of the op types we quantize, in graph order.

    Names are the ones `nodes_to_exclude` must use: in dynamic mode ORT first rewrites each
    Gemm (BERT's pooler and classifier) into a MatMul named `<gemm>_MatMul` and quantizes it.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    floats = {init.name for init in model.graph.initializer
              if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    wanted = set(op_types_to_quantize(quantize_embeddings=quantize_embeddings))
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Attention") and node.op_type in wanted and len(node.input) > 1 \
                and node.input[1] in floats:
            out.append(QuantCandidate(node.name, node.op_type, node.input[1], node.input[0]))
        elif node.op_type == "Gemm" and mode == "dynamic" and node.input[1] in floats and node.name:
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
                          max_trials: int = 10, max_fallback_fraction: float = 0.5,
                          on_trial: Callable[[SearchTrial], None] | None = None) -> tuple[SearchResult, Path]:
    """Fall back the most sensitive operators to fp32 until every language is within `goal`.

    Tries 0, 1, 2, 4, ... fallbacks (most sensitive first), then bisects between the last count
    that missed and the first that met the goal, so the model keeps as many int8 operators as
    the goal allows. Never falls back more than `max_fallback_fraction` of the operators (past
    that the model is no longer an int8 model). Always returns a model: the first that meets
    the goal with the fewest fallbacks, else the one with the smallest worst-language drop.
    """
    if not 0 <= goal < 1:
        raise KDCompressError(f"--accuracy-goal {goal} is not an accuracy difference; use e.g. 0.01 for one point")
    names = [cand.node for cand, _ in ranked]
    max_fallback = int(math.floor(len(names) * max_fallback_fraction))
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


def scheme_json(scheme: Int8Scheme, *, quantize_embeddings: bool, excluded: Iterable[str] = ()) -> dict:
    data = asdict(scheme)
    data["label"] = scheme.label
    data["op_types"] = op_types_to_quantize(quantize_embeddings=quantize_embeddings)
    data["embeddings"] = "int8" if quantize_embeddings else "fp32 (--keep-embeddings-fp32)"
    data["fp32_fallback_nodes"] = list(excluded)
    return data
