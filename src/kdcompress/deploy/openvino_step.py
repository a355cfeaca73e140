"""`export-onnx --runtime openvino`: the checked fp32 ONNX graph -> an OpenVINO model (fp32, or NNCF int8
under the per-language int8 control), its inference precision (bf16 where the CPU has it and every
language stays within the control's bound) and its parity per language against PyTorch.

The int8 ladder (int8_control.py) on OpenVINO: NNCF's default int8; reduced range (NNCF's overflow
fix on every layer); the embedding lookups (Gather) in fp32; int8 weights only (NNCF weight
compression: activations at the inference precision); the most int8-sensitive matrix multiplies
in fp32 (int8_search.py's ranking of the ONNX graph, whose node names OpenVINO keeps, as an NNCF
ignored scope). NNCF's own accuracy control serves --accuracy-goal; as the control's last rung it
left more languages failing than NNCF's default int8 on a 6-layer student (benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdcompress.deploy import openvino as ovx
from kdcompress.deploy.checks import FP32_TOLERANCE, CheckSet, Parity, run_logits
from kdcompress.deploy.context import ExportRun
from kdcompress.deploy.int8_control import (GateData, Ladder, Rung, in_runtime_order, judge, sensitive_base,
                                            shortfall)
from kdcompress.deploy.int8_step import gate_data, load_calibration, ort_logits, show_attempt
from kdcompress.errors import KDCompressError
from kdcompress.runtime.registry import get_runtime

# OpenVINO's CPU kernels sum in another order than ONNX Runtime's: fp32 logits differ by ~1e-6..1e-5.
OV_FP32_TOLERANCE = 10 * FP32_TOLERANCE
EMBEDDING_TYPES = ("Gather",)


def require_libraries(config: Any) -> None:
    """Fail before any work when the openvino extra is missing (NNCF only matters for int8)."""
    from kdcompress.runtime.backends import import_openvino

    import_openvino()
    if config.quantize != "none":
        ovx.import_nncf()


@dataclass
class OpenVinoResult:
    model: Any
    inference_precision: str
    fp32_check: dict  # the fp32 OpenVINO model in f32, against PyTorch
    final_check: dict  # the saved model at its inference precision, against PyTorch


def _logits_fn(compiled: Any) -> Callable[[dict], np.ndarray]:
    return lambda feed: ovx._run(compiled, feed)


def ov_logits(model: Any, check: CheckSet, precision: str = "f32") -> dict[str, np.ndarray]:
    run = _logits_fn(ovx.compile_model(model, precision))
    return {lang: run_logits(run, batches) for lang, batches in check.batches.items()}


def openvino_step(run: ExportRun, parity: Parity, fp32_path: Path, check: CheckSet) -> OpenVinoResult:
    config, ui = run.config, run.ui
    with ui.stage("openvino_convert", "convert the fp32 ONNX graph to OpenVINO"):
        model = ovx.read_onnx(fp32_path)
    with ui.stage("check_openvino_fp32", "check the OpenVINO fp32 model against PyTorch"):
        fp32_check = parity.compare_run(_logits_fn(ovx.compile_model(model, "f32")))
    if fp32_check["max_abs_logit_diff"] > OV_FP32_TOLERANCE:
        raise KDCompressError(f"the OpenVINO fp32 model differs from PyTorch by {fp32_check['max_abs_logit_diff']:.2e} "
                              f"in the logits (> {OV_FP32_TOLERANCE:g}); nothing was written - please report this "
                              "model, and use --runtime onnxruntime meanwhile")
    run.report["openvino"] = {"fp32_tolerance": OV_FP32_TOLERANCE}

    gate = dev_set = None
    if config.min_agreement > 0 or config.accuracy_goal is not None:
        gate, dev_set = gate_data(run, check, lambda dev: ort_logits(fp32_path, dev))
    if config.quantize == "static":
        model = _int8(run, model, fp32_path, gate, dev_set)
    elif config.quantize == "weights":
        model = _int8_weights(run, model, gate, dev_set)

    precision, reason = _inference_precision(run, model, gate, dev_set)
    run.report["openvino"].update(inference_precision=precision, inference_precision_reason=reason)
    ui.note(f"OpenVINO inference precision: {precision} - {reason}")
    with ui.stage("check_openvino", f"check the OpenVINO model ({precision}) against PyTorch"):
        final_check = parity.compare_run(_logits_fn(ovx.compile_model(model, precision)))
    return OpenVinoResult(model, precision, fp32_check, final_check)


def _int8(run: ExportRun, model: Any, fp32_path: Path, gate: GateData | None, dev_set: CheckSet | None) -> Any:
    config, ui = run.config, run.ui
    calibration_feeds, calibration_source = load_calibration(run)
    quantization = {"tool": "nncf", "model_type": "transformer", "preset": "mixed", "target_device": "CPU",
                    "calibration": {"source": calibration_source,
                                    "examples": sum(len(f["input_ids"]) for f in calibration_feeds)}}
    run.report["quantization"] = quantization
    if config.accuracy_goal is not None:
        with ui.stage("quantize", f"NNCF int8 with accuracy control (every language within {config.accuracy_goal})"):
            model, accuracy = ovx.quantize_int8_controlled(model, calibration_feeds, _dev_sets(run, gate, dev_set),
                                                           max_drop=config.accuracy_goal)
        quantization["method"] = "nncf.quantize_with_accuracy_control"
        run.report["accuracy"] = {**accuracy, "fp32_fallback_nodes": []}
        return model
    if gate is None:
        with ui.stage("quantize", "NNCF int8"):
            quantization["method"] = "nncf.quantize"
            return ovx.quantize_int8(model, calibration_feeds)

    made: dict[str, Any] = {}

    def quantized(name: str, **kwargs: Any) -> Callable[[], tuple[Any, dict]]:
        def build() -> tuple[Any, dict]:
            with ui.stage(f"quantize_{name}", f"NNCF int8 ({name})"):
                made[name] = ovx.quantize_int8(model, calibration_feeds, **kwargs)
            return made[name], {"nncf": _describe(kwargs)}
        return build

    def weights_only() -> tuple[Any, dict]:
        with ui.stage("quantize_int8_weights_only", "NNCF int8 weights only"):
            compressed = ovx.compress_int8_weights(model)
        return compressed, {"nncf": {"method": "compress_weights", "mode": "int8_sym"}}

    ladder = Ladder(gate, lambda candidate: ov_logits(candidate, dev_set))
    rungs = [
        Rung("default", "NNCF's int8 for transformers (mixed preset, per-channel weights, overflow fix on the first "
             "layer)", quantized("default")),
        Rung("per_channel_reduced_range", "per-channel weights, reduced (7-bit) range on every layer "
             "(NNCF overflow_fix=enable)", quantized("per_channel_reduced_range", reduced_range=True)),
        Rung("fp32_embeddings", "the embedding lookups (Gather) left in fp32",
             quantized("fp32_embeddings", ignored_types=EMBEDDING_TYPES),
             skip=lambda: None if _quantizes_embeddings(made["default"]) else
             "NNCF's int8 leaves the embedding lookups of this model in fp32 already: nothing to change"),
        # Before the search for fp32 operators: it needs no search, keeps the file int8, and on the AMX Xeon of
        # benchmarks/README.md ran as fast as bf16, faster than int8 with a third of its matrix multiplies in fp32.
        Rung("int8_weights_only", "int8 weights only (NNCF weight compression, symmetric, per channel): "
             "activations stay at the inference precision", weights_only),
        Rung("sensitive_ops_fp32", "the better NNCF scheme so far, with its most int8-sensitive matrix multiplies "
             "(the sensitivity ranking of the ONNX graph; OpenVINO keeps its node names) in fp32, the fewest that "
             "pass", lambda: _sensitive(run, model, fp32_path, calibration_feeds, gate, dev_set, ladder.attempts)),
    ]
    ui.note(f"int8 control: every language >= {config.min_agreement:.0%} argmax agreement with fp32 on "
            f"{gate.source} or {gate.allowance()}, else fallbacks")
    kept, record = ladder.run(in_runtime_order(rungs, "openvino"), on_attempt=lambda a: show_attempt(run, a))
    quantization["method"] = {"sensitive_ops_fp32": "nncf.quantize (ignored scope: the most sensitive operators)",
                              "int8_weights_only": "nncf.compress_weights (int8_sym: weights only)"
                              }.get(record["kept"], "nncf.quantize")
    if record["kept"] == "int8_weights_only":
        for unused in ("preset", "calibration"):  # weight compression takes neither
            quantization.pop(unused)
    run.report["int8_control"] = record
    if not record["passed"]:
        ui.warn(f"no OpenVINO int8 candidate kept every language at {config.min_agreement:.0%} agreement: kept "
                f"{record['kept']} (worst {record['worst_language']} {record['min_agreement']:.1%}); "
                "see int8_control in export.json")
    return kept


def _int8_weights(run: ExportRun, model: Any, gate: GateData | None, dev_set: CheckSet | None) -> Any:
    """--quantize weights: NNCF weight compression alone (the int8 ladder's int8_weights_only rung, asked for), judged
    by the same gate. Its compiled model keeps the weights int8, where NNCF's int8 with int8 activations unpacked to
    about 1 GB for a 6-layer student (benchmarks/README.md)."""
    with run.ui.stage("quantize_int8_weights_only", "NNCF int8 weights only"):
        compressed = ovx.compress_int8_weights(model)
    run.report["quantization"] = {"tool": "nncf", "method": "nncf.compress_weights (int8_sym: weights only)",
                                  "target_device": "CPU"}
    if gate is None:
        return compressed
    verdict = judge(gate, ov_logits(compressed, dev_set))
    run.report["int8_control"] = {
        "rule": (f"every checked language keeps >= {gate.min_agreement:.0%} argmax agreement with fp32 on its dev "
                 f"sentences, or {gate.allowance()}"),
        "data": gate.source, "passed": verdict["passed"], "kept": "int8_weights_only",
        "why_kept": "asked for (--quantize weights)", "failing": verdict["failing"],
        "min_agreement": verdict["min_agreement"], "worst_language": verdict["worst_language"],
        "per_language": verdict["per_language"]}
    if not verdict["passed"]:
        run.ui.warn(f"int8 weights only leave {', '.join(verdict['failing'][:5])} below the int8 control's bound "
                    f"(worst {verdict['worst_language']} {verdict['min_agreement']:.1%}); see int8_control in "
                    "export.json")
    return compressed


def _describe(kwargs: dict) -> dict:
    return {"overflow_fix": "enable" if kwargs.get("reduced_range") else "first_layer_only",
            "ignored_types": list(kwargs.get("ignored_types", ())), "ignored_names": len(kwargs.get("ignored_names", ()))}


def _quantizes_embeddings(quantized: Any) -> bool:
    """Whether NNCF's int8 put a FakeQuantize (or int8 weights) in front of a Gather's data input."""
    for op in quantized.get_ordered_ops():
        if op.get_type_name() != "Gather":
            continue
        producer = op.input_value(0).get_node()
        seen = 0
        while producer is not None and seen < 4:  # Convert / Subtract / Multiply of a decompressed weight
            if producer.get_type_name() == "FakeQuantize" or producer.get_element_type().get_type_name() in ("i8",
                                                                                                              "u8"):
                return True
            if producer.get_input_size() == 0:
                break
            producer = producer.input_value(0).get_node()
            seen += 1
    return False


_RUNG_KWARGS = {"default": {}, "per_channel_reduced_range": {"reduced_range": True}}


def _sensitive(run: ExportRun, model: Any, fp32_path: Path, calibration_feeds: list, gate: GateData,
               dev_set: CheckSet, attempts: list) -> tuple[Any, dict]:
    """Rank the ONNX graph's matrix multiplies by int8 sensitivity, then keep the fewest most sensitive in fp32
    (NNCF ignored scope, by name) that bring every language through the gate."""
    from kdcompress.deploy.int8_scheme import QuantizationSpec, detect_cpu_features
    from kdcompress.deploy.int8_search import accuracy_aware_search, quantization_candidates, rank_by_sensitivity

    ui = run.ui
    scheme_rung, fp32_embeddings, why = sensitive_base(attempts)
    kwargs = dict(_RUNG_KWARGS[scheme_rung], ignored_types=EMBEDDING_TYPES if fp32_embeddings else ())
    spec = QuantizationSpec.for_cpu(detect_cpu_features(), "static")  # NNCF's int8: s8 weights per channel
    with ui.stage("sensitivity", "rank operators by int8 sensitivity"):
        candidates = [c for c in quantization_candidates(fp32_path, spec) if c.activation is not None]
        sample = [{k: v for k, v in batches[0].items() if k != "_order"} for batches in dev_set.batches.values()]
        ranked = rank_by_sensitivity(fp32_path, candidates, spec.scheme, sample, run.work)
    models: dict[Path, Any] = {}

    def quantize(excluded: Any, dst: Path) -> None:
        models[dst] = ovx.quantize_int8(model, calibration_feeds, ignored_names=list(excluded), **kwargs)

    def evaluate(dst: Path) -> dict[str, float]:
        return {lang: -miss for lang, miss in shortfall(gate, ov_logits(models[dst], dev_set)).items()}

    with ui.stage("search", "search the fewest fp32 operators that pass"):
        result, chosen = accuracy_aware_search(
            goal=0.0, ranked=ranked, quantize=quantize, evaluate=evaluate,
            reference_accuracy={lang: 0.0 for lang in gate.reference}, workdir=run.work,
            max_trials=run.config.max_trials,
            on_trial=lambda t: ui.note(f"{len(t.fallback_nodes):3d} operators in fp32: " + (
                f"worst shortfall {t.worst_drop:.4f} ({t.worst_language})" if t.worst_drop > 1e-9
                else "every language passes")))
    return models[chosen], {
        "nncf": _describe(kwargs), "base": why, **result.fallback_record()}


def _dev_sets(run: ExportRun, gate: GateData | None, dev_set: CheckSet | None) -> dict:
    """(feed, labels in the model's class indices) batches per language, for NNCF's accuracy control."""
    if gate is None or gate.labels is None or gate.label_map is None:
        raise KDCompressError("--accuracy-goal needs labelled dev data in the model's task; pass --task and "
                              "--data-dir")
    to_class = np.argsort(gate.label_map)  # task label index -> model class index
    return {lang: [({k: v for k, v in b.items() if k != "_order"}, to_class[gate.labels[lang][b["_order"]]])
                   for b in batches] for lang, batches in dev_set.batches.items()}


def _inference_precision(run: ExportRun, model: Any, gate: GateData | None,
                         dev_set: CheckSet | None) -> tuple[str, str]:
    """bf16 where the CPU runs it and, with the control on, every language still passes under bf16."""
    supported, cpu = ovx.cpu_bf16()
    if not supported:
        return "f32", cpu
    if gate is None:
        return "bf16", f"{cpu}; accuracy under bf16 not checked (--min-agreement 0)"
    with run.ui.stage("check_bf16", "check every language under bf16"):
        verdict = judge(gate, ov_logits(model, dev_set, "bf16"))
    run.report["openvino"]["bf16_check"] = {k: verdict[k] for k in ("passed", "failing", "min_agreement",
                                                                      "worst_language")}
    if not verdict["passed"]:
        return "f32", (f"{cpu}, but under bf16 {', '.join(verdict['failing'][:5])} fall below the int8 control's "
                       f"bound (worst {verdict['worst_language']} {verdict['min_agreement']:.1%}); kept f32")
    return "bf16", (f"{cpu}; under bf16 every language passes the int8 control (worst agreement with fp32: "
                    f"{verdict['worst_language']} {verdict['min_agreement']:.2%})")


def check_static_lengths(model_path: Path, precision: str, check: CheckSet, lengths: list[int],
                         min_agreement: float) -> dict:
    """Each check sentence alone, through the static model of the next length (padded, masked) against the dynamic
    model: the same labels, logits within rounding. A failure is one line, and nothing is written."""
    from kdcompress.runtime.backends import OpenVinoBackend

    lengths = sorted(set(lengths))
    backend = OpenVinoBackend(model_path, threads=None, precision=precision, static_lengths=tuple(lengths))
    diffs, agree, routed = [], [], 0
    for batches in check.batches.values():
        for batch in batches:
            feed = {k: v for k, v in batch.items() if k != "_order"}
            for row in range(len(feed["input_ids"])):
                used = int(feed["attention_mask"][row].sum()) if "attention_mask" in feed else feed["input_ids"].shape[1]
                single = {k: v[row:row + 1, :used] for k, v in feed.items()}
                dynamic, static = backend.run_dynamic(single), backend.run(single)
                routed += used <= lengths[-1]
                diffs.append(float(np.abs(static - dynamic).max()))
                agree.append(bool(static.argmax(-1)[0] == dynamic.argmax(-1)[0]))
    agreement = float(np.mean(agree)) if agree else 1.0
    if agreement < min_agreement:
        raise KDCompressError(f"single sentences padded to the OpenVINO static lengths {lengths} agree with the dynamic "
                              f"model on {agreement:.1%} of the check sentences (< {min_agreement:.0%}); nothing was "
                              "written - export without --openvino-static-lengths")
    return {"static_lengths": lengths, "static_check": {
        "sentences": len(agree), "through_static": routed, "argmax_agreement": agreement,
        "max_abs_logit_diff": max(diffs, default=0.0), "precision": precision}}


def save_model(model: Any, staging: Path) -> Path:
    from kdcompress.runtime.backends import import_openvino

    path = staging / get_runtime("openvino").files[0]
    import_openvino().save_model(model, str(path), compress_to_fp16=False)
    return path


def op_counts(model: Any) -> dict[str, int]:
    from collections import Counter

    counts = Counter(op.get_type_name() for op in model.get_ordered_ops())
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
