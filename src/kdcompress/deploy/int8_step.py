"""The export's int8 stage: choose the scheme, load calibration data, quantize under the per-language
int8 control (int8_control.py: every checked language >= 97% argmax agreement with fp32, else the
fallbacks in order) - or, with `--accuracy-goal`, search for the fewest fp32 fallbacks that keep every
language's dev accuracy within the goal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kdcompress.deploy.check_data import calibration_examples
from kdcompress.deploy.checks import CheckSet, accuracy, feeds, onnx_logits, session
from kdcompress.deploy.context import ExportRun
from kdcompress.deploy.int8_control import GateData, Ladder, Rung, in_runtime_order, sensitive_base, shortfall
from kdcompress.deploy.int8_scheme import QuantizationSpec, detect_cpu_features
from kdcompress.deploy.int8_search import SearchTrial, accuracy_aware_search, quantization_candidates, \
    rank_by_sensitivity
from kdcompress.deploy.quantize import Feed, quantize_int8
from kdcompress.errors import KDCompressError


def load_calibration(run: ExportRun) -> tuple[list[Feed], str]:
    """Static int8's calibration feeds (batches of 8) and where the examples came from."""
    with run.ui.stage("calibration_data", "load calibration examples"):
        examples, calibration_source = calibration_examples(run.config, run.data)
        return feeds(run.source, examples, batch_size=8), calibration_source


def gate_data(run: ExportRun, check: CheckSet | None,
              fp32_logits: Callable[[CheckSet], dict[str, np.ndarray]]) -> tuple[GateData, CheckSet]:
    """The int8 control's data: each checked language's dev sentences (--eval-samples, with labels where
    the task's match the model's) and the fp32 model's logits on them. Without dev data, the check set."""
    config, data = run.config, run.data
    with run.ui.stage("gate_data", f"load {data.task.name} dev sentences for the int8 control "
                      f"({len(data.langs)} languages)"):
        with_labels = data.label_map is not None
        try:
            dev = data.load("dev", config.eval_samples)
            dev_set = CheckSet.from_examples(run.source, dev, batch_size=16, with_labels=with_labels,
                                             described=f"{data.task.name} dev, first {config.eval_samples} per "
                                                       "language")
        except KDCompressError:
            if check is None:
                raise
            dev_set, with_labels = check, False
    with run.ui.stage("fp32_reference", "run the fp32 model on them"):
        reference = fp32_logits(dev_set)
    labels = dev_set.labels if with_labels and dev_set.labels is not None else None
    gate = GateData(reference, labels, data.label_map if labels is not None else None,
                    min_agreement=config.min_agreement, source=dev_set.source, confidence=config.int8_confidence)
    return gate, dev_set


def ort_logits(path: Path, check: CheckSet) -> dict[str, np.ndarray]:
    onnx_session = session(path)
    return {lang: onnx_logits(onnx_session, batches) for lang, batches in check.batches.items()}


def int8_step(run: ExportRun, fp32_path: Path, check: CheckSet | None = None) -> Path:
    """Quantize `fp32_path` as `run.config` asks; record it in the report; return the int8 graph's path."""
    config, ui = run.config, run.ui
    spec = QuantizationSpec.for_cpu(detect_cpu_features(), config.quantize,
                                    quantize_embeddings=not config.keep_embeddings_fp32)
    ui.note(f"int8 scheme: {spec.scheme.label} - {spec.scheme.reason}")

    calibration_feeds: list[Feed] = []
    calibration_source = None
    if spec.mode == "static":
        calibration_feeds, calibration_source = load_calibration(run)

    int8_path = run.work / "model_int8.onnx"
    if config.accuracy_goal is not None:
        int8_path, spec = _accuracy_aware(run, fp32_path, spec, calibration_feeds)
    elif config.min_agreement > 0:
        int8_path, spec = _controlled(run, fp32_path, spec, calibration_feeds, check)
    else:
        with ui.stage("quantize", f"quantize ({spec.scheme.label})"):
            quantize_int8(fp32_path, int8_path, spec, calibration_feeds)
    run.report["quantization"] = spec.to_json()
    if calibration_source:
        run.report["quantization"]["calibration"] = {"source": calibration_source,
                                                     "examples": sum(len(f["input_ids"]) for f in calibration_feeds)}
    return int8_path


def _accuracy_aware(run: ExportRun, fp32_path: Path, spec: QuantizationSpec,
                    calibration_feeds: Sequence[Feed]) -> tuple[Path, QuantizationSpec]:
    """The int8 graph that meets `--accuracy-goal` with the fewest fp32 operators (else the best found),
    and the spec that made it."""
    config, ui, source, data = run.config, run.ui, run.source, run.data
    goal, task, label_map = config.accuracy_goal, data.task, data.label_map
    with ui.stage("dev_data", f"load {task.name} dev data ({len(data.langs)} languages)"):
        dev = data.load("dev", config.eval_samples)
        dev_set = CheckSet.from_examples(source, dev, batch_size=16, described=f"{task.name} dev", with_labels=True)
    with ui.stage("fp32_accuracy", "measure fp32 dev accuracy"):
        reference = accuracy(fp32_path, dev_set, label_map)
    with ui.stage("sensitivity", "rank operators by int8 sensitivity"):
        candidates = quantization_candidates(fp32_path, spec)
        # A few batches of every language: activation ranges differ by script.
        sample = [{n: b[n] for n in source.input_names} for batches in dev_set.batches.values() for b in batches[:1]]
        ranked = rank_by_sensitivity(fp32_path, candidates, spec.scheme, sample, run.work)

    def show(trial: SearchTrial) -> None:
        state = "[green]meets goal[/]" if trial.meets_goal else "[yellow]misses goal[/]"
        ui.note(f"{len(trial.fallback_nodes):3d} operators in fp32: worst drop {trial.worst_drop:+.3f} "
                f"({trial.worst_language}) {state}")

    with ui.stage("search", f"accuracy-aware int8 (goal: every language within {goal})"):
        result, chosen = accuracy_aware_search(
            goal=goal, ranked=ranked,
            quantize=lambda excluded, dst: quantize_int8(fp32_path, dst, spec.excluding(excluded), calibration_feeds),
            evaluate=lambda path: accuracy(path, dev_set, label_map),
            reference_accuracy=reference, workdir=run.work, max_trials=config.max_trials, on_trial=show)
    run.report["accuracy"] = result.to_json()
    run.report["accuracy"]["dev"] = {"task": task.name, "split": "dev", "languages": list(data.langs),
                                     "samples_per_language": {l: len(ex) for l, ex in dev.items()}}
    return chosen, spec.excluding(result.best.fallback_nodes)


def show_attempt(run: ExportRun, attempt: dict) -> None:
    state = "[green]passes[/]" if attempt["passed"] else f"[yellow]{len(attempt['failing'])} language(s) fail[/]"
    run.ui.note(f"{attempt['name']}: worst agreement {attempt['min_agreement']:.1%} ({attempt['worst_language']}) "
                f"{state}")


def _controlled(run: ExportRun, fp32_path: Path, spec: QuantizationSpec, calibration_feeds: Sequence[Feed],
                check: CheckSet | None) -> tuple[Path, QuantizationSpec]:
    """The default int8, else the fallbacks of int8_control.py in order, until every language passes."""
    config, ui = run.config, run.ui
    gate, dev_set = gate_data(run, check, lambda dev: ort_logits(fp32_path, dev))
    ladder = Ladder(gate, lambda artifact: ort_logits(artifact[0], dev_set))

    def quantized(name: str, chosen: QuantizationSpec) -> tuple[tuple[Path, QuantizationSpec], dict]:
        path = run.work / f"int8_{name}.onnx"
        with ui.stage(f"quantize_{name}", f"quantize ({name}: {chosen.scheme.label}"
                      + ("" if chosen.quantize_embeddings else ", fp32 embeddings") + ")"):
            quantize_int8(fp32_path, path, chosen, calibration_feeds)
        return (path, chosen), {"scheme": chosen.scheme.label, "embeddings": "int8" if chosen.quantize_embeddings
                                else "fp32"}

    tried: dict[str, QuantizationSpec] = {}

    def best_spec() -> QuantizationSpec:
        done = [a for a in ladder.attempts if a.get("tried")]
        best = min(done, key=lambda a: (len(a["failing"]), -a["min_agreement"]))
        return tried[best["name"]]

    def rung(name: str, make_spec: Callable[[], QuantizationSpec]) -> Callable[[], tuple]:
        def build():
            tried[name] = make_spec()
            return quantized(name, tried[name])
        return build

    reduced = dataclasses.replace(spec, scheme=dataclasses.replace(
        spec.scheme, per_channel=True, reduce_range=True,
        reason="fallback: per-channel weights in 7 bits (reduced range) for every operator"))
    rungs = [
        Rung("default", f"the CPU's scheme: {spec.scheme.label}", rung("default", lambda: spec)),
        Rung("per_channel_reduced_range", "per-channel weights, reduced (7-bit) range",
             rung("per_channel_reduced_range", lambda: reduced),
             skip="the default scheme already has per-channel, reduced-range weights"
             if spec.scheme.per_channel and spec.scheme.reduce_range else None),
        Rung("fp32_embeddings", "the better scheme so far, with the embedding table in fp32",
             rung("fp32_embeddings", lambda: dataclasses.replace(best_spec(), quantize_embeddings=False)),
             skip="the embeddings are already fp32 (--keep-embeddings-fp32)" if not spec.quantize_embeddings
             else None),
        Rung("sensitive_ops_fp32", "the better scheme so far, with its most int8-sensitive matrix multiplies "
             "(sensitivity ranking) in fp32, the fewest that pass", lambda: _sensitive(run, fp32_path, *_base(),
                                                                                      calibration_feeds, gate,
                                                                                      dev_set, tried)),
    ]

    def _base() -> tuple[QuantizationSpec, str]:
        scheme_rung, fp32_embeddings, why = sensitive_base(ladder.attempts)
        chosen = tried[scheme_rung]
        return (dataclasses.replace(chosen, quantize_embeddings=False) if fp32_embeddings else chosen), why

    ui.note(f"int8 control: every language >= {config.min_agreement:.0%} argmax agreement with fp32 on "
            f"{gate.source} or {gate.allowance()}, else fallbacks")
    (path, chosen), record = ladder.run(in_runtime_order(rungs, "onnxruntime"), on_attempt=lambda a: show_attempt(run, a))
    run.report["int8_control"] = record
    if not record["passed"]:
        ui.warn(f"no int8 candidate kept every language at {config.min_agreement:.0%} agreement: kept "
                f"{record['kept']} (worst {record['worst_language']} {record['min_agreement']:.1%}); "
                "see int8_control in export.json")
    return path, chosen


def _sensitive(run: ExportRun, fp32_path: Path, base: QuantizationSpec, base_why: str,
               calibration_feeds: Sequence[Feed], gate: GateData, dev_set: CheckSet,
               tried: dict) -> tuple[tuple[Path, QuantizationSpec], dict]:
    """Rank operators by int8 sensitivity, then fall back the fewest most sensitive ones that pass the gate."""
    source, ui = run.source, run.ui
    with ui.stage("sensitivity", "rank operators by int8 sensitivity"):
        # Matrix multiplies only: the embedding table was measured as a whole by the fp32_embeddings rung, and
        # its per-tensor weight-only error ranks it first while costing 4x the file (250k-token vocabularies).
        candidates = [c for c in quantization_candidates(fp32_path, base) if c.activation is not None]
        sample = [{n: b[n] for n in source.input_names} for batches in dev_set.batches.values() for b in batches[:1]]
        ranked = rank_by_sensitivity(fp32_path, candidates, base.scheme, sample, run.work)
    zero = {lang: 0.0 for lang in gate.reference}

    def evaluate(path: Path) -> dict[str, float]:
        return {lang: -miss for lang, miss in shortfall(gate, ort_logits(path, dev_set)).items()}

    with ui.stage("search", "search the fewest fp32 operators that pass"):
        result, chosen = accuracy_aware_search(
            goal=0.0, ranked=ranked, reference_accuracy=zero, workdir=run.work, max_trials=run.config.max_trials,
            quantize=lambda excluded, dst: quantize_int8(fp32_path, dst, base.excluding(excluded), calibration_feeds),
            evaluate=evaluate,
            on_trial=lambda t: ui.note(f"{len(t.fallback_nodes):3d} operators in fp32: "
                                       + (f"worst shortfall {t.worst_drop:.4f} ({t.worst_language})"
                                          if t.worst_drop > 1e-9 else "every language passes")))
    spec = base.excluding(result.best.fallback_nodes)
    tried["sensitive_ops_fp32"] = spec
    return (chosen, spec), {
        "scheme": base.scheme.label, "embeddings": "int8" if base.quantize_embeddings else "fp32", "base": base_why,
        **result.fallback_record(),
    }
