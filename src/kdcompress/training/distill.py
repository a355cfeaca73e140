"""`distill`: build a student from a teacher and train it with one of the strategies of `strategies.py`.

Order of work: check every input (`setup.prepare`), take the output lock, then walk the strategy's
stages in the run directory (`run_dir.py`): a finished stage is never redone, an interrupted one
restarts from its last checkpoint with `resume=True`, and only a complete run is renamed to `<out>`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

import kdcompress
from kdcompress.console import stderr_console
from kdcompress.machine import library_versions, physical_cores
from kdcompress.errors import KDCompressError
from kdcompress.io import write_json_atomic
from kdcompress.quiet import quiet_libraries
from kdcompress.settings import build
from kdcompress.training.config import DistillConfig
from kdcompress.training.run_dir import RunDirectory
from kdcompress.training.setup import RunSetup, prepare
from kdcompress.training.stages import STAGES, StageOutputs, teacher_stage

console = stderr_console()


@dataclass(frozen=True)
class DistillResult:
    out: Path
    record: dict  # what distill.json holds

    @property
    def dev_accuracy(self) -> dict | None:
        return self.record.get("dev_accuracy")


def distill(config: DistillConfig | None = None, **overrides) -> DistillResult:
    """Distill a student into `out`. Keyword settings override `config` (both are checked before any work)."""
    quiet_libraries()
    cfg = build(DistillConfig, config, overrides)
    run = RunDirectory(_require_out(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
    run.check()
    setup = prepare(cfg)
    started = time.perf_counter()
    with run.open(cfg.to_dict()):
        outputs = StageOutputs(teacher=setup.given_finetuned_teacher,
                               general=Path(cfg.general_student) if cfg.general_student else None)
        final = None
        for name in setup.strategy.stages:
            if (name == "teacher" and outputs.teacher is not None) or (name == "pretrain_kd" and outputs.general):
                continue  # given (--finetuned-teacher, --general-student): nothing to train
            function, folder, fills = STAGES[name]
            stage_dir = run.stage(folder, lambda ckpt, fn=function: fn(setup, outputs, ckpt))
            if fills == "teacher":
                outputs.teacher, outputs.teacher_made_here = stage_dir, True
            elif fills == "general":
                outputs.general = final = stage_dir
            else:
                final = stage_dir
        record = _record(setup, run, student=True)
        record["finetuned_teacher"] = (str(outputs.teacher) if outputs.teacher and not outputs.teacher_made_here
                                       else None)
        if outputs.pretrain_losses:
            record["pretrain_losses"] = outputs.pretrain_losses
        _publish(setup, run, record, final, outputs.teacher if outputs.teacher_made_here else None, started)
    return DistillResult(run.out, record)


def finetune_teacher(config: DistillConfig | None = None, **overrides) -> DistillResult:
    """Fine-tune the teacher on the source language (once), to share it across many `distill` runs through
    `finetuned_teacher=`."""
    quiet_libraries()
    cfg = build(DistillConfig, config, overrides)
    run = RunDirectory(_require_out(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
    run.check()
    setup = prepare(cfg, student=False)
    if setup.teacher_is_finetuned:
        raise KDCompressError(f"teacher {cfg.teacher} is already fine-tuned on {setup.task.name}; use it as it is")
    started = time.perf_counter()
    with run.open(cfg.to_dict()):
        stage_dir = run.stage("teacher", lambda ckpt: teacher_stage(setup, StageOutputs(), ckpt))
        record = _record(setup, run, student=False)
        record["role"] = "fine-tuned teacher"
        _publish(setup, run, record, stage_dir, None, started)
    return DistillResult(run.out, record)


def _require_out(cfg: DistillConfig) -> str:
    if not cfg.out:
        raise KDCompressError("no output directory: pass --out DIR (or set out in the config file)")
    return cfg.out


def _record(setup: RunSetup, run: RunDirectory, *, student: bool) -> dict:
    return {"stages": run.stage_records, **setup.record(), "kdcompress_version": kdcompress.__version__,
            "config": setup.cfg.to_dict(), "strategy": setup.strategy.name if student else None,
            "task": {"name": setup.task.name, "labels": list(setup.task.labels), "source_lang": setup.source,
                     "target_langs": setup.targets},
            "student": {**setup.plan.to_dict(), "vocab_trimmed": setup.keep_ids is not None} if student else None,
            "max_length": setup.max_length}


def _dev_accuracy(setup: RunSetup, model_dir: Path, what: str) -> dict:
    """Dev-split accuracy per language, with the same runner and preprocessing `bench` uses."""
    from kdcompress.bench import accuracy as acc
    from kdcompress.bench.runners import load_runner

    device = "cuda" if torch.cuda.is_available() else "cpu"
    runner = load_runner(model_dir, device, torch.get_num_threads(), max_length=setup.max_length)
    mapping = acc.label_mapping(runner.labels, setup.task, model_name=str(model_dir))
    langs = [setup.source, *setup.targets]
    examples = {lang: acc.sample_examples(setup.task.load("dev", lang, data_dir=setup.data_dir), setup.cfg.eval_limit)
                for lang in langs}
    result = {"split": "dev", **acc.summarize_languages(acc.evaluate(runner, mapping, examples),
                                                          setup.source, setup.targets)}
    targets = result["target_average"]
    console.print(f"{what} dev accuracy: source {100 * result['source']:.1f}%"
                  + (f", target average {100 * targets:.1f}% over {len(result['targets'])} languages"
                     if targets else ""))
    return result


def _training_device() -> str:
    """Where the run trained, for the wall times the study reports (a GPU's name, else the CPU's cores)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU, {physical_cores()} physical cores"


def _publish(setup: RunSetup, run: RunDirectory, record: dict, final_stage: Path, teacher_stage_dir: Path | None,
             started: float):
    """Assemble the output directory inside the work folder, then rename it into place at once."""
    if not run.state.is_main_process:
        return

    assembled = run.assemble(final_stage, teacher_stage_dir)
    with safe_open(str(assembled / "model.safetensors"), "pt") as weights:
        n_params = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    what = "student" if setup.plan else "fine-tuned teacher"
    record.update(parameters=n_params, wall_seconds=round(time.perf_counter() - started, 2),
                  versions=library_versions(), device=_training_device())
    # what earlier invocations of a resumed run trained: 0 when there were none, None when not known
    record["earlier_invocations_seconds"] = None if run.earlier_seconds is None else round(run.earlier_seconds, 2)
    if setup.cfg.evaluate and setup.strategy.makes_classifier:
        record["dev_accuracy"] = _dev_accuracy(setup, assembled, what.split()[-1])
    write_json_atomic(assembled / "distill.json", record)
    run.publish(assembled)
    console.print(f"[green]{what} written to {run.out}[/] ({n_params / 1e6:.1f}M parameters, "
                  f"{record['wall_seconds']:.0f} s)")
