"""Run an experiment: every step writes a directory under `out` and is skipped when that directory exists,
so an interrupted experiment continues where it stopped when run again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kdcompress.console import report_console, stderr_console
from kdcompress.data.tasks import get_task, normalise_lang, resolve_languages
from kdcompress.experiment.config import IMPORTABLE_TEACHERS, ExperimentConfig
from kdcompress.experiment.step_pool import StepPool, cpu_note
from kdcompress.experiment.steps import EarlyAccuracy, Pending, Steps, completion_order, wait_for_any
from kdcompress.experiment.step_settings import (TEACHER_SETTINGS, legacy_settings, student_settings,
                                                 subset_settings, teacher_settings)
from kdcompress.experiment.report import ExperimentOutcome, print_summary, write_experiment_report
from kdcompress.experiment.summary import ModelRef, aggregate, assess_claims
from kdcompress.experiment.teacher_size import load_compared, teacher_facts, teacher_size_claims
from kdcompress.errors import KDCompressError
from kdcompress.io import check_writable_output, read_json
from kdcompress.locks import output_lock
from kdcompress.runtime.registry import get_runtime
from kdcompress.training.config import DistillConfig
from kdcompress.training.strategies import get_strategy

console = stderr_console()


# The settings that shape a general student: arms that agree on these share one.
_PRETRAINING_SETTINGS = ("student_layers", "student_hidden", "layer_selection", "trim_vocab", "max_length",
                         "batch_size", "grad_accum", "warmup_ratio", "weight_decay", "max_steps", "mixed_precision",
                         "freeze_embeddings", "corpus", "corpus_max_sentences", "pretrain_epochs", "pretrain_lr",
                         "mlm_weight", "hidden_weight", "attention_weight", "hidden_loss", "mlm_probability",
                         "pretrain_temperature")


# Settings added later: part of the key only when set, so that general students made before keep their names.
_LATER_PRETRAINING_SETTINGS = ("pretrain_batch_size",)


# What a general student's record holds: the settings that shape it, and where it comes from.
_GENERAL_STUDENT_SETTINGS = (*_PRETRAINING_SETTINGS, *_LATER_PRETRAINING_SETTINGS, "trim_vocab_characters", "teacher",
                             "seed", "task", "data_dir", "source_lang", "target_langs")


def _pretraining_key(settings: dict) -> str:
    full = DistillConfig.from_dict({**settings, "out": "x"}).to_dict()
    chosen = {k: full[k] for k in _PRETRAINING_SETTINGS}
    chosen.update({k: full[k] for k in _LATER_PRETRAINING_SETTINGS if full[k] is not None})
    if full["trim_vocab"]:  # read only when trimming (and added later: untrimmed keys stay as they were)
        chosen["trim_vocab_characters"] = full["trim_vocab_characters"]
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:8]


def _check_inputs(cfg: ExperimentConfig, task, out: Path, *, writing: bool) -> None:
    """What can be checked before any output exists: `out` (when `writing`: a status query only reads it, even
    while a run writes it), the data folder and a local teacher (its config, weights and tokenizer)."""
    from kdcompress.data.corpus import check_corpora
    from kdcompress.data.tasks import data_dir_from_env
    from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable
    from kdcompress.training.teacher_loading import load_teacher_config

    if writing:
        check_writable_output(out, overwrite=True)  # an existing `out` is an experiment to continue, never replaced
    task.load("train", normalise_lang(task, cfg.source_lang), data_dir=data_dir_from_env(cfg.data_dir))
    for _, _, settings in cfg.arm_list():  # before an imported teacher is written into `out`
        check_corpora(settings)
    if cfg.teacher not in IMPORTABLE_TEACHERS:
        teacher_config = load_teacher_config(cfg.teacher)
        if Path(cfg.teacher).expanduser().is_dir():
            check_weights_readable(cfg.teacher, what="teacher")
            check_model_dir_tokenizer(cfg.teacher, teacher_config.vocab_size, what="teacher")


def _check_steps(cfg: ExperimentConfig, teacher: str, common: dict) -> bool:
    """Every step's settings checked against the teacher before the first one trains: the teacher fine-tuning
    and each arm's distill inputs (student shape, corpus, transfer set, ...: what `distill` itself checks
    first) and [bench] seq_lens against the positions every student shares with the teacher.

    Returns whether the teacher is already fine-tuned on the task (a smaller teacher made by an earlier run,
    say, for the teacher-size claim): it is then used as it is, for both roles."""
    from kdcompress.model_check import model_max_positions
    from kdcompress.training.setup import prepare

    base = {**common, "teacher": teacher, "seed": cfg.seeds[0]}
    where = cfg.config_path or "the experiment"
    setup = prepare(DistillConfig.from_dict({**cfg.distill, **base}, where=f"[distill] of {where}"), student=False)
    positions = model_max_positions(setup.teacher_config)
    too_long = [n for n in cfg.step_settings("bench").seq_lens if n > positions]
    if too_long:
        raise KDCompressError(f"[bench] seq_lens {', '.join(map(str, too_long))} in {where} exceed the teacher's "
                              f"{positions} positions, which every student shares; choose lengths up to {positions}")
    for arm, strategy, settings in cfg.arm_list():
        prepare(DistillConfig.from_dict({**settings, **base, "strategy": strategy}, where=f"arm {arm} of {where}"))
    return setup.teacher_is_finetuned


@contextlib.contextmanager
def _experiment_dir(out: Path) -> Iterator[None]:
    """Hold `<out>.lock` for the whole run; an `out` this run created and left empty is removed on failure."""
    with output_lock(out):
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            yield
        except BaseException:
            if created:  # empty folders only, deepest first: anything written stays for the rerun
                for folder in [*sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), out]:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise


class _GeneralStudents:
    """The general student an arm starts from: distilled once per set of pretraining settings, into
    students/general-<key>, where a run on another machine may have put it already."""

    def __init__(self, cfg: ExperimentConfig, out: Path, steps: Steps, teacher: str, common: dict):
        self.cfg, self.out, self.steps, self.teacher, self.common = cfg, out, steps, teacher, common
        self.made: dict[str, Pending] = {}
        self.of_arm: dict[str, str] = {}

    def step_dirs(self) -> dict[str, list[str]]:
        """Each general student as a step of its own, named after the arms that start from it."""
        arms: dict[str, list[str]] = {}
        for arm, path in self.of_arm.items():
            arms.setdefault(path, []).append(arm)
        return {f"general student ({', '.join(names)})": [path] for path, names in arms.items()}

    def corpus_sentences(self) -> dict[str, int]:
        """Sentences each arm's general student read (the cap may exceed what the corpus holds)."""
        return {arm: read_json(Path(path) / "distill.json", what="general student record")["corpus"]["sentences"]
                for arm, path in self.of_arm.items()}

    def submit(self, arm: str, settings: dict) -> Pending | None:
        """The arm's general student, submitted to the pool once per key; None when the arm starts from none."""
        from kdcompress import distill

        if not (self.cfg.reuse_general_student and "pretrain_kd" in get_strategy(settings["strategy"]).stages):
            return None
        key = _pretraining_key(settings)
        if key not in self.made:
            self.made[key] = self.steps.submit(
                f"distill general student ({arm})", self.out / "students" / f"general-{key}", distill,
                {**settings, "strategy": "general", "kd_transfer": "source", "teacher": self.teacher,
                 "seed": self.cfg.seeds[0], **self.common},
                subset_settings({**settings, "teacher": self.teacher, "seed": self.cfg.seeds[0], **self.common},
                                _GENERAL_STUDENT_SETTINGS), legacy_settings(_GENERAL_STUDENT_SETTINGS))
        self.of_arm[arm] = str(self.made[key].folder)
        return self.made[key]


def _general_students_only(cfg: ExperimentConfig, out: Path, steps: Steps, teacher: str, common: dict) -> Path:
    general_student = _GeneralStudents(cfg, out, steps, teacher, common)
    pending = [general_student.submit(arm, {**settings, "strategy": strategy})
               for arm, strategy, settings in cfg.arm_list()]
    for step in pending:
        if step is not None:
            step.result()
    if steps.dry:
        return out / "students"
    if not general_student.made:
        console.print("[yellow]no arm runs KD during pretraining: there is no general student to make[/]")
    for name, seconds in steps.timings.items():
        console.print(f"{name}: {seconds} s")
    console.print(f"[bold green]general students in {out / 'students'}[/]")
    return out / "students"


def accuracy_cache_dir(cfg: ExperimentConfig, out: Path) -> str:
    """Where the experiment keeps each model's test accuracy: [bench] accuracy_cache, else OUT/accuracy-cache."""
    return cfg.step_settings("bench").accuracy_cache or str(out / "accuracy-cache")


@dataclass(frozen=True)
class _Plan:
    """What an experiment run and a status query both start from, checked before any output exists."""

    cfg: ExperimentConfig
    out: Path
    source: str
    targets: list[str]
    common: dict
    teacher_is_finetuned: bool


def _plan(config: ExperimentConfig | None, overrides: dict, *, writing: bool = True) -> _Plan:
    from kdcompress.quiet import quiet_libraries
    from kdcompress.settings import build

    quiet_libraries()
    cfg = build(ExperimentConfig, config, overrides)
    task = get_task(cfg.task)
    source, targets = resolve_languages(task, cfg.source_lang, cfg.target_langs)
    out = Path(cfg.out).expanduser()
    _check_inputs(cfg, task, out, writing=writing)
    common = dict(task=cfg.task, data_dir=cfg.data_dir, source_lang=source, target_langs=targets)
    load_compared(cfg.compare_teachers, own_out=out, task=cfg.task, source=source, targets=targets)
    teacher_is_finetuned = cfg.teacher not in IMPORTABLE_TEACHERS and _check_steps(cfg, cfg.teacher, common)
    return _Plan(cfg, out, source, targets, common, teacher_is_finetuned)


def run_experiment(config: ExperimentConfig | None = None, **overrides) -> Path:
    """Run (or continue) an experiment; returns the report directory (the students directory with
    stop_after = "general-students").

    Everything that can be checked is checked before `out` is created; the run then holds `<out>.lock`.
    """
    plan = _plan(config, overrides)
    with _experiment_dir(plan.out), StepPool(plan.cfg.workers) as pool:
        return _run(plan, Steps(plan.out, pool))


def placed_steps(config: ExperimentConfig | None = None, **overrides) -> tuple[ExperimentConfig, list]:
    """Every step of the experiment, placed as a run would place it (kdcompress.reuse) but with nothing run or
    written: (name, StepPlace, settings) in the order a serial run takes them. experiment/status.py reads them."""
    plan = _plan(config, overrides, writing=False)
    steps = Steps(plan.out, dry=True)
    _run(plan, steps)
    return plan.cfg, steps.placed


def _run(plan: _Plan, steps: Steps) -> Path:
    """The experiment's steps in order; with `steps.dry`, each is only placed and the folder of the benchmark
    returned (the report needs its output)."""
    from kdcompress import distill, export_onnx, finetune_teacher, import_teacher, run_bench

    cfg, out, source, targets, common = plan.cfg, plan.out, plan.source, plan.targets, plan.common
    teacher_is_finetuned = plan.teacher_is_finetuned
    started = time.perf_counter()
    if steps.pool.workers > 1:
        console.print(f"[dim]{cpu_note(steps.pool.workers)}[/]")

    teacher = cfg.teacher
    if teacher in IMPORTABLE_TEACHERS:
        teacher = str(steps(f"import teacher ({teacher})", out / "teachers" / "general",
                            lambda target, _: import_teacher(cfg.teacher, target), {"teacher": cfg.teacher}))
        if Path(teacher).is_dir():  # a status query before the import has no teacher to check against yet
            _check_steps(cfg, teacher, common)
    if cfg.stop_after == "general-students":
        return _general_students_only(cfg, out, steps, teacher, common)
    distill_settings = dict(cfg.distill)
    general_student = _GeneralStudents(cfg, out, steps, teacher, common)
    if teacher_is_finetuned:
        console.print(f"[dim]the teacher {teacher} is already fine-tuned on {cfg.task}: used as it is[/]")
        finetuning = None
    else:
        finetuning = steps.submit(
            "fine-tune the teacher", out / "teachers" / "finetuned", finetune_teacher,
            {"teacher": teacher, "seed": cfg.seeds[0], **common, **distill_settings},
            teacher_settings({**distill_settings, **common, "teacher": teacher, "seed": cfg.seeds[0]}),
            legacy_settings(TEACHER_SETTINGS))
    # The general students read the pretrained teacher, not the fine-tuned one: they are made beside it.
    generals = {arm: general_student.submit(arm, {**settings, "strategy": strategy})
                for arm, strategy, settings in cfg.arm_list()}
    bench_settings = cfg.step_settings("bench")
    early = EarlyAccuracy(steps.pool, cache=accuracy_cache_dir(cfg, out),
                           task=cfg.task, split=bench_settings.split, langs=[source, *targets],
                           limit=bench_settings.limit, data_dir=cfg.data_dir, device=bench_settings.device,
                           threads=None, max_length=bench_settings.max_length,
                           sentence_hits=bench_settings.sentence_hits, eval_batch_size=bench_settings.eval_batch_size)
    finetuned = teacher if finetuning is None else str(finetuning.folder)

    refs = [ModelRef("teacher", "teacher", None, "pytorch")]
    models = {"teacher": finetuned}
    latency_models = ["teacher"]
    step_dirs: dict[str, list[str]] = {} if teacher_is_finetuned else {"teacher fine-tuning": [finetuned]}

    def submit_student(seed: int, arm: str, strategy: str, arm_settings: dict) -> Pending:
        settings = {**arm_settings, "strategy": strategy}
        general = generals[arm] and str(generals[arm].result())
        reads_teacher = get_strategy(strategy).uses_finetuned_teacher
        # The settings name the fine-tuned teacher for every arm, as they always did (students made before keep their
        # records); only the arms that read it are handed it, so the others need not wait for it to exist.
        return steps.submit(f"distill {arm}-s{seed}", out / "students" / f"{arm}-s{seed}", distill,
                            {**settings, "teacher": teacher, "finetuned_teacher": finetuned if reads_teacher else None,
                             "general_student": general, "seed": seed, **common},
                            student_settings({**settings, "teacher": teacher, "finetuned_teacher": finetuned,
                                              "general_student": general, "seed": seed, **common}),
                            legacy_settings())

    def starts_from(job: tuple) -> list[Pending]:
        _, arm, strategy, _ = job
        teacher_step = [finetuning] if finetuning is not None and get_strategy(strategy).uses_finetuned_teacher else []
        return teacher_step + ([generals[arm]] if generals[arm] is not None else [])

    def in_flight() -> list[Future]:
        """The pool's work now: steps running or queued, and accuracy measurements."""
        steps_now = {id(step): step for step in [finetuning, *generals.values(), *submitted.values()] if step}
        return [step.future for step in steps_now.values() if not step.done()] + early.in_flight()

    # Each student goes to the pool once what it starts from exists and a worker is free: `none` at once, beside the
    # teacher's fine-tuning (on 2 CPU cores a 12-layer teacher took 90 minutes, which left a core idle), KD in
    # fine-tuning after the teacher, KD in pretraining after its general student; seed by seed, so that a run cut
    # short has every arm of its first seeds. Each model that exists is measured before the next student starts:
    # on the CPU XNLI study a first-in-first-out pool left every test accuracy for after all 12 students (6 hours).
    students = [(seed, arm, strategy, settings) for seed in cfg.seeds for arm, strategy, settings in cfg.arm_list()]
    waiting = list(students)
    submitted: dict[tuple[int, str], Pending] = {}
    while waiting:
        if finetuning is not None and finetuning.done():
            early.after(finetuning, "teacher")
        for (seed, arm), step in submitted.items():
            if step.done():
                early.after(step, f"{arm}-s{seed}")
        for job in [job for job in waiting if all(step.done() for step in starts_from(job))]:
            if len(in_flight()) >= steps.pool.workers:
                break
            waiting.remove(job)
            submitted[job[0], job[1]] = submit_student(*job)
        if waiting:  # until a worker is free or a step some student starts from ends
            wait_for_any(in_flight())
    if finetuning is not None:
        early.after(finetuning, "teacher")
    for seed, arm in completion_order(submitted):
        early.after(submitted[seed, arm], f"{arm}-s{seed}")
    for seed, arm, _, _ in students:
        name = f"{arm}-s{seed}"
        path = submitted[seed, arm].result()
        models[name] = str(path)
        step_dirs.setdefault(f"{arm} (fine-tuning stages)" if generals[arm] else arm, []).append(str(path))
        refs.append(ModelRef(name, arm, seed, "pytorch"))
        if seed == cfg.seeds[0]:
            latency_models.append(name)

    pytorch_models = list(latency_models)
    if cfg.quantize != "none":
        # Latency does not depend on the seed: the ONNX form of the first seed's models stands for all.
        forms = [("int8", "onnx", "onnxruntime", cfg.quantize)]
    else:
        forms = []
    if cfg.openvino:
        # The OpenVINO form (fp32 graph, bf16 inference where the CPU has it and accuracy holds): on CPUs with
        # AMX or avx512_bf16 it was the fastest path we measured (benchmarks/README.md).
        forms.append(("ov", "openvino", "openvino", "none"))
    for suffix, folder, runtime, quantize in forms:
        # Every export gets the [export] table (the form decides the runtime); ONNX Runtime's operator fusion
        # only where the runtime reads it.
        export_table = {k: v for k, v in cfg.export.items()
                        if k != "runtime" and (k != "optimize" or get_runtime(runtime).can_fuse)}
        for name in pytorch_models:
            form_name = f"{name}-{suffix}"
            path = steps(f"export {form_name}", out / folder / form_name,
                         lambda target, _, name=name, runtime=runtime, quantize=quantize, table=export_table:
                         export_onnx(model_dir=models[name], out=str(target), runtime=runtime, quantize=quantize,
                                     task=cfg.task, langs=[source, *targets], data_dir=cfg.data_dir, **table),
                         # the settings the step is reused on: as before for the forms' defaults, so that
                         # finished exports are kept
                         {"model_dir": models[name], **({"runtime": runtime} if runtime != "onnxruntime" else {}),
                          **({"quantize": quantize} if quantize != "none" else {}), "task": cfg.task,
                          "langs": [source, *targets], "data_dir": cfg.data_dir, **export_table})
            models[form_name] = str(path)
            group = "teacher" if name == "teacher" else name.rsplit("-s", 1)[0]
            refs.append(ModelRef(form_name, group, None if name == "teacher" else cfg.seeds[0],
                                 "int8" if runtime == "onnxruntime" else runtime))
            latency_models.append(form_name)

    early.collect(steps.timings)
    run = lambda target, _: run_bench(  # noqa: E731
        models=models, baseline="teacher", out=str(target), latency_models=latency_models, **common,
        **{**cfg.bench, "accuracy_cache": early.cache})
    bench_dir = steps("benchmark", out / "bench", run, {"models": models, "latency_models": latency_models,
                                                        "baseline": "teacher", **common, **cfg.bench})
    if steps.dry:
        return bench_dir
    payload = read_json(bench_dir / "bench.json", what="bench report")
    summary = aggregate(refs, payload["accuracy"], payload["headline"], source_lang=source)
    transfer_arms = tuple(arm for arm, strategy, settings in cfg.arm_list()
                          if "finetune_kd" in get_strategy(strategy).stages
                          and settings.get("kd_transfer", get_strategy(strategy).defaults.get("kd_transfer", "source"))
                          != "source")
    own = {"teacher": teacher_facts(finetuned), "summary": summary}
    compared = load_compared(cfg.compare_teachers, own_out=out, task=cfg.task, source=source, targets=targets)
    claims = assess_claims(summary, transfer_arms=transfer_arms,
                           teacher_size=teacher_size_claims(own, compared) if compared["reports"] else None)
    report_dir = write_experiment_report(out / "report", ExperimentOutcome(
        cfg=cfg, summary=summary, claims=claims, bench=payload, source=source, targets=targets,
        timings=steps.timings, wall_seconds=time.perf_counter() - started,
        corpus_sentences=general_student.corpus_sentences(),
        step_dirs={**step_dirs, **general_student.step_dirs()}, teacher=own["teacher"], compared=compared))
    print_summary(summary, report_console())
    for claim in claims:
        console.print(f"[bold]{claim['claim']}[/]: {claim['verdict']}")
    console.print(f"[bold green]report: {report_dir / 'experiment.md'}[/]")
    return report_dir
