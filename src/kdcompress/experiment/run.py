"""Run an experiment: every step writes a directory under `out` and is skipped when that directory exists,
so an interrupted experiment continues where it stopped when run again."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from kdcompress.data.tasks import get_task, normalise_lang
from kdcompress.experiment.config import IMPORTABLE_TEACHERS, ExperimentConfig
from kdcompress.experiment.report import print_summary, write_experiment_report
from kdcompress.experiment.summary import ModelRef, aggregate, assess_claims
from kdcompress.io import read_json

console = Console(stderr=True)


class _Steps:
    """Runs each named step once; an existing output directory means the step is done."""

    def __init__(self, out: Path):
        self.out = out
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, target: Path, make) -> Path:
        if target.exists():
            console.print(f"[dim]{name}: {target} exists, reused[/]")
            return target
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        partial = target.with_name(target.name + ".partial")
        make(target, partial.exists())  # a .partial folder is an interrupted distill: resume it
        self.timings[name] = round(time.perf_counter() - started, 1)
        return target


def _target_langs(cfg: ExperimentConfig, task, source: str) -> list[str]:
    if cfg.target_langs == "all":
        return [lang for lang in task.languages if lang != source]
    langs = cfg.target_langs.split(",") if isinstance(cfg.target_langs, str) else cfg.target_langs
    return [normalise_lang(task, lang.strip()) for lang in langs if lang.strip() and lang.strip() != source]


def run_experiment(config: ExperimentConfig | None = None, **settings) -> Path:
    """Run (or continue) an experiment; returns the report directory."""
    from kdcompress import bench, distill, export_onnx, finetune_teacher, import_teacher
    from kdcompress.quiet import quiet_libraries

    quiet_libraries()
    cfg = (config or ExperimentConfig(**settings)).validate()
    task = get_task(cfg.task)
    source = normalise_lang(task, cfg.source_lang)
    targets = _target_langs(cfg, task, source)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(out)
    started = time.perf_counter()
    common = dict(task=cfg.task, data_dir=cfg.data_dir, source_lang=source, target_langs=targets)

    teacher = cfg.teacher
    if teacher in IMPORTABLE_TEACHERS:
        teacher = str(steps(f"import teacher ({teacher})", out / "teachers" / "general",
                            lambda target, _: import_teacher(cfg.teacher, target)))
    distill_settings = dict(cfg.distill)
    finetuned = str(steps("fine-tune the teacher", out / "teachers" / "finetuned",
                          lambda target, resume: finetune_teacher(
                              teacher=teacher, out=str(target), resume=resume, seed=cfg.seeds[0],
                              **common, **distill_settings)))

    refs = [ModelRef("teacher", "teacher", None, "pytorch")]
    models = {"teacher": finetuned}
    latency_models = ["teacher"]
    for seed in cfg.seeds:
        for strategy in cfg.strategies:
            name = f"{strategy}-s{seed}"
            path = steps(f"distill {name}", out / "students" / name,
                         lambda target, resume, strategy=strategy, seed=seed: distill(
                             teacher=teacher, finetuned_teacher=finetuned, strategy=strategy, seed=seed,
                             out=str(target), resume=resume, **common, **distill_settings))
            models[name] = str(path)
            refs.append(ModelRef(name, strategy, seed, "pytorch"))
            if seed == cfg.seeds[0]:
                latency_models.append(name)

    if cfg.quantize != "none":
        # Latency does not depend on the seed: the ONNX form of the first seed's models stands for all.
        for name in list(latency_models):
            onnx_name = f"{name}-int8"
            path = steps(f"export {onnx_name}", out / "onnx" / onnx_name,
                         lambda target, _, name=name: export_onnx(
                             models[name], target, quantize=cfg.quantize, task=cfg.task,
                             langs=[source, *targets], data_dir=cfg.data_dir))
            models[onnx_name] = str(path)
            group = "teacher" if name == "teacher" else name.rsplit("-s", 1)[0]
            refs.append(ModelRef(onnx_name, group, None if name == "teacher" else cfg.seeds[0], "int8"))
            latency_models.append(onnx_name)

    bench_dir = out / "bench"
    run_bench = lambda target, _, overwrite=False: bench(  # noqa: E731
        models, baseline="teacher", out=target, latency_models=latency_models, overwrite=overwrite,
        **common, **cfg.bench)
    steps("benchmark", bench_dir, run_bench)
    payload = read_json(bench_dir / "bench.json", what="bench report")
    if payload["settings"]["models"] != models:  # seeds or strategies were added since: measure again
        steps.timings["benchmark"] = 0.0
        run_bench(bench_dir, False, overwrite=True)
        payload = read_json(bench_dir / "bench.json", what="bench report")
    summary = aggregate(refs, payload["accuracy"], payload["headline"], source_lang=source)
    claims = assess_claims(summary)
    report_dir = write_experiment_report(
        out / "report", cfg=cfg, summary=summary, claims=claims, bench=payload, targets=targets, source=source,
        timings=steps.timings, wall_seconds=time.perf_counter() - started,
    )
    print_summary(summary, Console())
    for claim in claims:
        console.print(f"[bold]{claim['claim']}[/]: {claim['verdict']}")
    console.print(f"[bold green]report: {report_dir / 'experiment.md'}[/]")
    return report_dir
