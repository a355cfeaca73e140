"""`kdcompress export-onnx`: export a sequence classifier to ONNX, optionally fuse and quantize, and check it.

The stages follow Optimum's split - export, then optimization (optimize.py), then quantization
(int8_step.py, with int8_scheme.py / quantize.py / int8_search.py) - and every result is checked
against the PyTorch model before it is kept (checks.py, on data chosen by check_data.py):
fp32 logits within 1e-4, argmax agreement on real sentences in every language asked for,
sizes and operator counts, all written to OUT/export.json. OUT holds what both plain
onnxruntime users and Optimum's `ORTModelForSequenceClassification.from_pretrained(OUT)`
expect: `model.onnx`, `config.json` (with the label names) and the tokenizer files.

Exporter choice: torch.onnx's TorchScript exporter (`dynamo=False`). On transformers 5 it is
exact (max logit difference ~1e-8, like the dynamo exporter) and 15x faster to run, and, with
eager attention, its graph is the one ONNX Runtime's BERT fusions were written for: all four
fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) apply, while on
the dynamo exporter's graph Attention and EmbedLayerNormalization do not. The dynamo exporter
is the fallback should the TorchScript one ever fail.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.deploy import checks
from kdcompress.deploy.check_data import check_inputs_readable, choose_check_data
from kdcompress.deploy.checks import CheckSet, Parity, brief, require_fp32_parity
from kdcompress.deploy.cls_only import cls_only_module, unsupported_reason
from kdcompress.deploy.config import ExportConfig
from kdcompress.deploy.context import ExportRun
from kdcompress.deploy.int8_scheme import detect_cpu_features
from kdcompress.deploy.int8_step import int8_step
from kdcompress.deploy.model_dir import SAMPLE_TEXTS, SourceModel, inspect_model_dir, load_model_dir
from kdcompress.deploy.progress import Progress, print_summary
from kdcompress.deploy.traced import logits_module
from kdcompress.errors import KDCompressError, describe
from kdcompress.io import atomic_output_dir, check_writable_output, match_umask, write_json_atomic
from kdcompress.locks import temp_prefix
from kdcompress.machine import library_versions
from kdcompress.model_config import trained_max_length
from kdcompress.os_errors import find_os_fault
from kdcompress.quiet import quiet_block
from kdcompress.runtime.registry import get_runtime
from kdcompress.settings import build

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx_data"  # ONNX Runtime's external-data convention
TWIN_CHECK_SAMPLES = 200  # dev sentences per language the SentencePiece tokenizer must tokenize identically
REPORT_FILE = "export.json"
_TOKENIZER_FILE_PREFIXES = ("tokenizer", "vocab", "special_tokens", "sentencepiece", "spiece")


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` made: OUT, export.json's content, and whether `--accuracy-goal` was met."""

    out: Path
    report: dict
    goal_met: bool  # True when no accuracy goal was asked
    precision: str  # "fp32" or "int8"

    @property
    def runtime(self) -> str:
        return self.report.get("runtime", "onnxruntime")

    @property
    def model_path(self) -> Path:
        return self.out / (self.report["files"]["model"] if "files" in self.report else MODEL_FILE)


# --- the public entry point ------------------------------------------------------------------

def export_onnx(config: ExportConfig | None = None, **overrides: Any) -> ExportResult:
    """Export `model_dir` to `out` (model.onnx, config.json, tokenizer, export.json).

    Takes an ExportConfig, keyword settings of the same names, or both (keywords win):
    `export_onnx(model_dir="runs/student", out="runs/int8", quantize="dynamic")`.
    quantize: "none" (fp32), "dynamic" (int8 weights, per-run activation ranges) or "static"
    (int8 with activation ranges calibrated on `calibration_data`). `accuracy_goal` (e.g. 0.01)
    makes int8 accuracy-aware: operators fall back to fp32, most sensitive first, until every
    language in `langs` is within the goal of the fp32 model on `task`'s dev split; the best
    model is saved even when no model meets the goal (`ExportResult.goal_met` is then False).
    """
    if config is not None and not isinstance(config, ExportConfig):
        raise KDCompressError(f"export_onnx takes an ExportConfig or keyword settings, not {config!r}; "
                              "call export_onnx(model_dir=..., out=..., ...)")
    config = build(ExportConfig, config, overrides)
    runtime = get_runtime(config.runtime)
    if runtime.export_requires:  # a missing extra is one line, before any work
        runtime.resolve("export_requires")(config)
    # Every input is checked before any work or output: OUT, the model folder (tokenizer, weights), the data.
    out = check_writable_output(config.out, config.overwrite, inputs=[config.model_dir])
    inspected = inspect_model_dir(config.model_dir)
    # Data: the check needs real sentences; accuracy-aware and static int8 also need labels.
    data = choose_check_data(config, inspected)
    check_inputs_readable(config, data)
    ui = Progress(config.progress)
    if data.warning:
        ui.warn(data.warning)
    with ui.stage("load", f"load {config.model_dir}"):
        source = load_model_dir(config.model_dir, inspected)

    # The lock (and the parent folders) first; the work folder carries our pid, so a killed run's is cleaned.
    with atomic_output_dir(out, overwrite=config.overwrite) as staging, \
            tempfile.TemporaryDirectory(prefix=temp_prefix(out, "work"), dir=out.parent) as work:
        run = ExportRun(config, source, data, Path(work), ui, report=_report_header(config, source))
        _export(run, staging)
        print_summary(ui, run.report)
        accuracy = run.report.get("accuracy")
        if accuracy and not accuracy["goal_met"]:
            ui.warn(f"no int8 model met --accuracy-goal {config.accuracy_goal}: saved the best found (worst drop "
                    f"{accuracy['worst_drop']:.3f} in {accuracy['worst_language']}, "
                    f"{len(accuracy['fp32_fallback_nodes'])} operators in fp32); see {out / REPORT_FILE}")
    return ExportResult(out=out, report=run.report, goal_met=accuracy["goal_met"] if accuracy else True,
                        precision=run.report["precision"])


def _report_header(config: ExportConfig, source: SourceModel) -> dict[str, Any]:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_dir": str(Path(config.model_dir).resolve()),
        "model_type": source.config.model_type,
        "architecture": (getattr(source.config, "architectures", None) or ["?"])[0],
        "labels": source.labels,
        "runtime": config.runtime,
    }


def _export(run: ExportRun, staging: Path) -> None:
    """Every stage, in order: check data, fp32 export, optional fusion and int8, then the files."""
    config, ui = run.config, run.ui
    check = _check_set(run)
    fp32_path = run.work / "model_fp32.onnx"
    last_layer = _last_layer_choice(run)
    with ui.stage("export", f"export to ONNX (opset {config.opset})"):
        exporter = export_fp32(run.source, fp32_path, opset=config.opset,
                               cls_only_last_layer=last_layer["graph"] == "cls_only")
    inputs, outputs, actual_opset = _graph_io(fp32_path)
    run.report["onnx"] = {"file": MODEL_FILE, "exporter": exporter, "opset": actual_opset, "inputs": inputs,
                          "outputs": outputs, "dynamic_axes": {"batch_size": 0, "sequence_length": 1},
                          "last_layer": last_layer}

    with ui.stage("reference", "run the PyTorch reference"):
        parity = Parity(run.source, check)
    with ui.stage("check_fp32", "check the fp32 graph against PyTorch"):
        fp32_check = parity.compare(fp32_path)
    require_fp32_parity(fp32_check, "exported fp32 graph")
    # The runtime's own step turns the checked fp32 graph into what OUT holds (runtime/registry.py).
    get_runtime(config.runtime).resolve("export_step")(run, staging, parity, check, fp32_path, fp32_check)


def export_onnxruntime_step(run: ExportRun, staging: Path, parity: Parity, check: CheckSet, fp32_path: Path,
                            fp32_check: dict) -> None:
    """--runtime onnxruntime: the checked fp32 graph, optionally fused and int8, checked per language, saved."""
    config, ui = run.config, run.ui
    current, final_check = fp32_path, fp32_check
    run.report["optimize"] = {"enabled": config.optimize}
    if config.optimize and not getattr(run.source.config, "num_hidden_layers", 1):
        run.report["optimize"] = {"enabled": False, "reason": "no transformer layer to fuse (static student)"}
        ui.note("--optimize skipped: a static student has no transformer layer to fuse")
    elif config.optimize:
        current, final_check = _optimize(run, parity, fp32_path)
    if config.quantize != "none":  # the fp32 ONNX model (fused or not) is what int8 is measured against
        current = int8_step(run, current, check)
        with ui.stage("check_int8", "check the int8 graph against PyTorch"):
            final_check = parity.compare(current)
        if final_check["min_argmax_agreement"] < 0.9:
            worst = min(final_check["per_language"].items(), key=lambda kv: kv[1]["argmax_agreement"])
            ui.warn(f"int8 argmax agreement is {worst[1]['argmax_agreement']:.0%} in {worst[0]}; "
                    "consider --accuracy-goal or --keep-embeddings-fp32")
    with ui.stage("write", f"write {config.out}"):
        write_outputs(run, staging, current, fp32_path, check_report(run, check, fp32_check, final_check))


def _last_layer_choice(run: ExportRun) -> dict[str, str]:
    """export.json's onnx.last_layer: whether the graph computes its last layer on [CLS] only, and why not."""
    if not run.config.cls_only_last_layer:
        return {"graph": "full", "reason": "--full-last-layer"}
    reason = unsupported_reason(run.source.model, run.source.input_names)
    if reason:
        run.ui.note(f"the last layer stays whole: {reason}")
        return {"graph": "full", "reason": reason}
    return {"graph": "cls_only", "reason": "a sequence classifier reads position 0 of the last layer only"}


def export_openvino_step(run: ExportRun, staging: Path, parity: Parity, check: CheckSet, fp32_path: Path,
                        fp32_check: dict) -> None:
    """--runtime openvino: the checked fp32 graph converted (and NNCF int8), checked per language, saved."""
    from kdcompress.deploy import openvino_step

    config = run.config
    run.report["onnx"]["file"] = None  # the ONNX graph OpenVINO converted; not kept in this directory
    result = openvino_step.openvino_step(run, parity, fp32_path, check)
    final = result.final_check
    if config.quantize != "none" and final["min_argmax_agreement"] < 0.9:
        worst = min(final["per_language"].items(), key=lambda kv: kv[1]["argmax_agreement"])
        run.ui.warn(f"OpenVINO int8 argmax agreement is {worst[1]['argmax_agreement']:.0%} in {worst[0]}")
    checked = check_report(run, check, fp32_check, final, openvino_fp32=result.fp32_check,
                           final_inference_precision=result.inference_precision)
    with run.ui.stage("save", "save the OpenVINO model"):
        model_path = openvino_step.save_model(result.model, staging)
        run.report["openvino"]["version"] = str(get_runtime("openvino").require().get_version())
    if config.openvino_static_lengths:
        with run.ui.stage("check_static", "check single sentences padded to the static lengths"):
            run.report["openvino"].update(openvino_step.check_static_lengths(
                model_path, result.inference_precision, check, config.openvino_static_lengths, config.min_agreement))
    with run.ui.stage("write", f"write {config.out}"):
        write_outputs(run, staging, model_path, fp32_path, checked, op_counts=openvino_step.op_counts(result.model))


def _check_set(run: ExportRun) -> CheckSet:
    """Real dev sentences per language; synthetic token ids when none load and nothing needs them."""
    config, data = run.config, run.data
    with run.ui.stage("data", f"load check sentences ({len(data.langs)} languages)"):
        try:
            return CheckSet.from_examples(run.source, data.load("dev", config.check_samples), batch_size=8,
                                          described=f"{data.task.name} dev, first {config.check_samples} per language")
        except KDCompressError as exc:
            if data.explicit or config.accuracy_goal is not None or config.quantize == "static":
                raise
            run.ui.warn(f"no real sentences for the check ({exc}); checked on synthetic token ids instead")
            return CheckSet.synthetic(run.source, config.check_samples, why=str(exc))


def _optimize(run: ExportRun, parity: Parity, fp32_path: Path) -> tuple[Path, dict]:
    from kdcompress.deploy.optimize import fuse_transformer_ops

    fused_path = run.work / "model_fused.onnx"
    model_config = run.source.config
    with run.ui.stage("optimize", "fuse transformer operators (ONNX Runtime)"):
        fusion = fuse_transformer_ops(fp32_path, fused_path, num_heads=int(model_config.num_attention_heads),
                                      hidden_size=int(model_config.hidden_size),
                                      num_layers=int(model_config.num_hidden_layers),
                                      cls_only_last_layer=run.report["onnx"]["last_layer"]["graph"] == "cls_only")
    run.report["optimize"].update(fusion)
    run.ui.note("fused: " + (", ".join(f"{k} x{v}" for k, v in fusion["fused"].items()) or "nothing"))
    if fusion["missing"]:
        run.ui.warn("not fused: " + ", ".join(f"{k} ({v['found']}/{v['expected']})"
                                               for k, v in fusion["missing"].items()))
    with run.ui.stage("check_fused", "check the fused graph against PyTorch"):
        fused_check = parity.compare(fused_path)
    require_fp32_parity(fused_check, "fused fp32 graph")
    run.report["optimize"]["check"] = brief(fused_check)
    return fused_path, fused_check


def _sentencepiece_twin(run: ExportRun, staging: Path) -> dict:
    """The quick-loading tokenizer for serving (deploy/sentencepiece_twin.py), written only if it gives the same
    ids as tokenizer.json on the dev text of every checked language."""
    from kdcompress.deploy.sentencepiece_twin import write_sentencepiece_twin

    try:
        examples = [e for found in run.data.load("dev", TWIN_CHECK_SAMPLES).values() for e in found]
    except KDCompressError:
        examples = []
    texts = [e.text for e in examples] or list(SAMPLE_TEXTS)
    pairs = [e.text_pair or "" for e in examples] if any(e.text_pair for e in examples) else None
    record = write_sentencepiece_twin(staging, texts, pairs, run.source.max_length)
    if record["written"]:
        run.ui.note(f"tokenizer for serving: SentencePiece, same ids as tokenizer.json on {record['texts_checked']} "
                    "texts")
    return record


def save_with_external_weights(src: Path, dst: Path) -> None:
    """Save the ONNX graph at `dst` with its weights in WEIGHTS_FILE beside it.

    ONNX Runtime memory-maps page-aligned external weights instead of copying them into the session, so a
    serving process holds only the pages it touches (the embedding rows of the tokens it sees) and never a
    second copy while the session is built: on the 6-layer e5-small student (250k-token vocabulary) the
    int8 session's peak RSS fell from 271 MB to 90 MB.
    """
    import onnx

    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=WEIGHTS_FILE, size_threshold=1024)
    match_umask(dst.with_name(WEIGHTS_FILE), mode=0o666)  # onnx creates it 0600: unreadable to a serving user


def check_report(run: ExportRun, check: CheckSet, fp32_check: dict, final_check: dict, **extra: Any) -> dict:
    """export.json's "check": what was checked on which sentences, the fp32 graph's and the saved model's parity."""
    return {"source": check.source, "languages": check.languages, "samples_per_language": run.config.check_samples,
            "fp32_tolerance": checks.FP32_TOLERANCE, "fp32": fp32_check, **extra, "final": final_check}


def write_outputs(run: ExportRun, staging: Path, model: Path, fp32_path: Path, checked: dict, *,
           op_counts: dict | None = None) -> None:
    """export.json and the files beside the model, for every runtime's export step; `model` is copied in as
    model.onnx unless it is already in `staging` (OpenVINO's openvino_model.xml/.bin, whose `op_counts` the
    caller gives)."""
    source, report = run.source, run.report
    if model.parent != staging:
        save_with_external_weights(model, staging / MODEL_FILE)
        model = staging / MODEL_FILE
    shutil.copyfile(source.model_dir / "config.json", staging / "config.json")
    with quiet_block():
        source.tokenizer.save_pretrained(staging)
    report["sentencepiece"] = _sentencepiece_twin(run, staging)
    if (source.model_dir / "distill.json").is_file():
        shutil.copyfile(source.model_dir / "distill.json", staging / "distill.json")
    fp32_bytes = fp32_path.stat().st_size
    weights = model.with_name(WEIGHTS_FILE) if model.name == MODEL_FILE else model.with_suffix(".bin")
    model_bytes = model.stat().st_size + (weights.stat().st_size if weights.is_file() else 0)
    report["precision"] = "fp32" if run.config.quantize == "none" else "int8"
    report["max_length"] = trained_max_length(source.model_dir)  # what predict and bench truncate to by default
    report["files"] = {"model": model.name, "config": "config.json",
                       "tokenizer": sorted(p.name for p in staging.iterdir()
                                           if p.name.startswith(_TOKENIZER_FILE_PREFIXES))}
    if weights.is_file():
        report["files"]["weights"] = weights.name
    report["sizes"] = {"fp32_bytes": fp32_bytes, "model_bytes": model_bytes,
                       "model_vs_fp32": round(model_bytes / fp32_bytes, 4)}
    report["op_counts"] = {"fp32": _op_counts(fp32_path), "model": op_counts or _op_counts(model)}
    report["check"] = checked
    report["cpu"] = detect_cpu_features().summary()
    report["versions"] = library_versions()
    report["timings_s"] = dict(run.ui.timings)  # a snapshot: ExportResult.report is what export.json holds
    write_json_atomic(staging / REPORT_FILE, report)


# --- fp32 export -----------------------------------------------------------------------------

def _trace_example(source: SourceModel) -> tuple:
    import torch

    # Two rows of different lengths so the traced mask has zeros and nothing batch-1 is baked in.
    encoded = source.tokenizer(list(SAMPLE_TEXTS), padding=True, return_tensors="pt")
    return tuple(encoded[name].to(torch.long) for name in source.input_names)


def export_fp32(source: SourceModel, path: Path, *, opset: int, cls_only_last_layer: bool = False) -> str:
    """Export with dynamic batch and sequence axes; return which exporter produced the graph.
    `cls_only_last_layer`: the last layer on position 0 only (cls_only.py; check `unsupported_reason` first)."""
    import torch

    if cls_only_last_layer:
        wrapper = cls_only_module(source.model, source.input_names)
    else:
        wrapper = logits_module(source.model, source.input_names)
    example = _trace_example(source)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in source.input_names}
    axes["logits"] = {0: "batch_size"}
    with quiet_block(), torch.no_grad():
        try:
            torch.onnx.export(wrapper, example, str(path), dynamo=False, input_names=source.input_names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
            return "torch.onnx.export (TorchScript, dynamo=False)"
        except Exception as ts_exc:  # noqa: BLE001 - any tracer failure: try the other exporter
            path.unlink(missing_ok=True)
            if find_os_fault(ts_exc):  # a full disk or a permission is not the exporter's fault: name it
                raise ts_exc
            try:
                batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
                program = torch.onnx.export(wrapper, example, dynamo=True, input_names=source.input_names,
                                            output_names=["logits"], opset_version=max(opset, 18),
                                            dynamic_shapes=tuple({0: batch, 1: seq} for _ in example))
                program.save(str(path), external_data=False)
                return f"torch.onnx.export (dynamo; TorchScript failed: {describe(ts_exc)})"
            except Exception as exc:  # noqa: BLE001
                if find_os_fault(exc):
                    raise
                raise KDCompressError(f"torch.onnx could not export {source.model_dir} ({describe(exc)}); "
                                      "check that the model runs in PyTorch") from None


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items(), key=lambda kv: -kv[1]))


def _graph_io(path: Path) -> tuple[list[dict], list[str], int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = [{"name": i.name, "shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}
              for i in model.graph.input]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs, [o.name for o in model.graph.output], opset
