"""OpenVINO's model-level steps for `export-onnx --runtime openvino` (openvino_step.py runs them in order):
read an fp32 ONNX graph, NNCF int8 (calibrated on source-language feeds, optionally with NNCF's accuracy
control keeping every given language's dev accuracy within `max_drop` of fp32), int8 weights only,
compile, and whether the CPU has bf16.

Feeds are what ONNX Runtime takes: dicts of graph input name -> int64 array (batch x length);
keys the graph does not declare are dropped. A dev set is, per language, a list of
(feed, labels) batches, labels as model class indices (the argmax space of the logits).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kdcompress.errors import KDCompressError, describe
from kdcompress.runtime.backends import import_openvino, read_json_dict
from kdcompress.runtime.registry import EXPORT_REPORT, get_runtime

Feed = Mapping[str, np.ndarray]
DevSets = Mapping[str, Sequence[tuple[Feed, np.ndarray]]]
DEFAULT_MAX_DROP = 0.01


# --- the libraries ------------------------------------------------------------------------------

def import_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise KDCompressError(f"NNCF (OpenVINO's int8 quantizer) is not installed; run {get_runtime('openvino').install}") from None
    return nncf


@contextlib.contextmanager
def _quiet_nncf(nncf: Any) -> Iterator[None]:
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: the caller shows its own
            yield
    finally:
        nncf.set_log_level(logging.INFO)


def cpu_bf16() -> tuple[bool, str]:
    """Whether OpenVINO runs bf16 on this CPU (AMX or avx512_bf16), and the flags that say so."""
    ov = import_openvino()
    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    if "BF16" in capabilities:
        return True, f"CPU has {', '.join(found) or 'bf16 support'} (OpenVINO capability BF16)"
    return False, "CPU has neither AMX nor avx512_bf16 (no OpenVINO BF16 capability)"


# --- model-level steps --------------------------------------------------------------------------

def onnx_source(onnx: str | os.PathLike) -> tuple[Path, Path]:
    """(ONNX file, its exported directory) for a directory made by export-onnx or its model.onnx."""
    path = Path(onnx)
    onnx_file = path / get_runtime("onnxruntime").files[0] if path.is_dir() else path
    if not onnx_file.is_file():
        raise KDCompressError(f"no ONNX model at {onnx_file}; pass a directory made by `kdcompress export-onnx` "
                              "or its model.onnx")
    if read_json_dict(onnx_file.parent / EXPORT_REPORT).get("precision") == "int8":
        raise KDCompressError(f"{onnx_file} is ONNX Runtime int8; convert an fp32 export (export-onnx "
                              "--quantize none) and let NNCF quantize it")
    return onnx_file, onnx_file.parent


def read_onnx(onnx: str | os.PathLike) -> Any:
    """The fp32 `ov.Model` of an exported ONNX directory (or file)."""
    ov = import_openvino()
    onnx_file, _ = onnx_source(onnx)
    try:
        return ov.convert_model(str(onnx_file))
    except Exception as exc:  # noqa: BLE001 - unsupported operator, corrupt file
        raise KDCompressError(f"OpenVINO cannot convert {onnx_file} ({describe(exc)}); convert the unfused fp32 "
                              "export (export-onnx without --optimize)") from None


def _input_names(model: Any) -> list[str]:
    return [port.get_any_name() for port in model.inputs]


def _select(feed: Feed, names: Sequence[str]) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in feed]
    if missing:
        raise KDCompressError(f"a feed lacks the model input {missing[0]!r}; build feeds with the model's tokenizer")
    return {n: np.asarray(feed[n], dtype=np.int64) for n in names}


def _check_feeds(feeds: Sequence[Feed], what: str) -> None:
    if not feeds:
        raise KDCompressError(f"no {what}; pass at least one batch of tokenized source-language text")


def quantize_int8(model: Any, calibration_feeds: Sequence[Feed], *, reduced_range: bool = False,
                  ignored_types: Sequence[str] = (), ignored_names: Sequence[str] = ()) -> Any:
    """NNCF post-training int8 (transformer patterns, mixed preset) calibrated on `calibration_feeds`.

    reduced_range: NNCF's overflow fix on every layer (7-bit weights, per channel) instead of the first
    only; ignored_types: OpenVINO operator types left in fp32 (e.g. Gather: the embedding lookups);
    ignored_names: operators left in fp32 by name (OpenVINO keeps the ONNX node names).
    """
    nncf = import_nncf()
    _check_feeds(calibration_feeds, "calibration feeds")
    names = _input_names(model)
    dataset = nncf.Dataset(list(calibration_feeds), lambda feed: _select(feed, names))
    extra: dict[str, Any] = {}
    if reduced_range:
        extra["advanced_parameters"] = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
    if ignored_types or ignored_names:
        extra["ignored_scope"] = nncf.IgnoredScope(types=list(ignored_types), names=list(ignored_names),
                                                   validate=False)
    with _quiet_nncf(nncf):
        return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                             target_device=nncf.TargetDevice.CPU, subset_size=len(calibration_feeds), **extra)


def compress_int8_weights(model: Any) -> Any:
    """Int8 weights only (NNCF weight compression, symmetric, per output channel): every matrix multiply and
    embedding table stored in int8, activations left at the inference precision. No calibration data: the
    error is the weights' rounding alone, which keeps argmax agreement where int8 activations lose it."""
    nncf = import_nncf()
    with _quiet_nncf(nncf):
        # compress_weights rewrites the model it is given: work on a copy, the caller's fp32 model stays.
        return nncf.compress_weights(model.clone(), mode=nncf.CompressWeightsMode.INT8_SYM)


def compile_model(model: Any, precision: str = "f32", threads: int | None = None) -> Any:
    ov = import_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model, "CPU", config)


def _run(compiled: Any, feed: Feed) -> np.ndarray:
    names = [port.get_any_name() for port in compiled.inputs]
    return np.asarray(compiled(_select(feed, names))[compiled.output(0)], dtype=np.float32)


def dev_accuracy(compiled: Any, items: Sequence[tuple[str, Feed, np.ndarray]]) -> dict[str, float]:
    """Accuracy per language over (language, feed, labels) batches."""
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for lang, feed, labels in items:
        predicted = _run(compiled, feed).argmax(-1)
        right[lang] = right.get(lang, 0) + int((predicted == np.asarray(labels)).sum())
        total[lang] = total.get(lang, 0) + len(predicted)
    return {lang: right[lang] / total[lang] for lang in total}


def _dev_items(dev_sets: DevSets) -> list[tuple[str, Feed, np.ndarray]]:
    items = [(lang, feed, np.asarray(labels)) for lang, batches in dev_sets.items() for feed, labels in batches]
    if not items:
        raise KDCompressError("no dev sets; pass each language's tokenized dev batches with their labels")
    return items


def quantize_int8_controlled(model: Any, calibration_feeds: Sequence[Feed], dev_sets: DevSets, *,
                             max_drop: float = DEFAULT_MAX_DROP) -> tuple[Any, dict]:
    """NNCF int8 with accuracy control: operators go back to fp32, most harmful first, until every
    language's dev accuracy is within `max_drop` of the fp32 model's (NNCF validates in f32).

    The metric NNCF sees is the worst language's accuracy minus its fp32 accuracy (0 for the fp32
    model), so NNCF's single absolute `max_drop` bounds every language. Returns the model and a
    report: per-language fp32 and int8 accuracy, worst drop and whether the bound was met.
    """
    nncf = import_nncf()
    _check_feeds(calibration_feeds, "calibration feeds")
    if not 0 <= max_drop < 1:
        raise KDCompressError(f"max_drop {max_drop} must be an accuracy difference in [0, 1), e.g. 0.01")
    items = _dev_items(dev_sets)
    names = _input_names(model)
    reference = dev_accuracy(compile_model(model, "f32"), items)

    def validate(compiled: Any, data: Any) -> tuple[float, None]:
        accuracy = dev_accuracy(compiled, list(data))
        return min(accuracy[lang] - reference[lang] for lang in accuracy), None

    calibration = nncf.Dataset(list(calibration_feeds), lambda feed: _select(feed, names))
    validation = nncf.Dataset(items, lambda item: _select(item[1], names))
    with _quiet_nncf(nncf):
        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, validation, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            model_type=nncf.ModelType.TRANSFORMER, target_device=nncf.TargetDevice.CPU,
            subset_size=len(calibration_feeds))
    int8 = dev_accuracy(compile_model(quantized, "f32"), items)
    return quantized, _accuracy_report(reference, int8, max_drop)


def _accuracy_report(reference: Mapping[str, float], candidate: Mapping[str, float], max_drop: float) -> dict:
    drops = {lang: reference[lang] - candidate[lang] for lang in reference}
    worst = max(drops, key=drops.get)
    return {"max_drop": max_drop, "fp32_accuracy": dict(reference), "int8_accuracy": dict(candidate),
            "worst_language": worst, "worst_drop": round(drops[worst], 6),
            "goal_met": all(d <= max_drop + 1e-12 for d in drops.values())}
