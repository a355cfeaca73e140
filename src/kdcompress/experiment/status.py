"""`experiment-status`: where an experiment stands, read from its folder; nothing is run or written.

A study too long for one sitting (the converged XNLI study takes many hours on 2 cores) is continued by running
the same command again. This tells, before that, what the next run will reuse, resume from a checkpoint, or run,
using the run's own rules (kdcompress.reuse): a folder made with other settings shows as a step still to run."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdcompress.bench.accuracy_cache import AccuracyCache
from kdcompress.experiment.config import ExperimentConfig
from kdcompress.locks import live_holder
from kdcompress.reuse import StepPlace, describe_changes


@dataclass(frozen=True)
class StepStatus:
    name: str
    folder: str
    state: str  # done | running | partly done | to run
    progress: str = ""  # a partial run's finished stages and checkpoint, or what changed
    accuracy: str = ""  # a model's languages in the accuracy cache, e.g. "15/15"


def partial_progress(folder: Path) -> str:
    """What `<folder>.partial` (training/run_dir.py) holds: finished stages, and each checkpoint's step."""
    work = folder.with_name(folder.name + ".partial")
    stages = work / "stages"
    parts = [f"{stage.name} done" for stage in sorted(stages.iterdir()) if stage.is_dir()] if stages.is_dir() else []
    for record in sorted(work.glob("checkpoints/*/latest/progress.json")):
        try:
            progress = json.loads(record.read_text(encoding="utf-8"))
            step, total, seconds = int(progress["step"]), progress.get("total_steps"), progress.get("seconds")
        except (OSError, ValueError, KeyError, TypeError):
            parts.append(f"{record.parents[1].name}: unreadable checkpoint")
            continue
        # checkpoints written before the total and the time were recorded say only their step
        text = f"{record.parents[1].name}: step {step}" + (f"/{total}" if total else "")
        if total and seconds and step:
            text += f", ~{seconds / step * (total - step) / 60:.0f} min left at its pace so far"
        parts.append(text)
    return "; ".join(parts)


def _state(place: StepPlace) -> tuple[str, str]:
    if place.reuse:
        return "done", ""
    holder = live_holder(place.folder)
    progress = partial_progress(place.folder)
    if holder is not None:
        return "running", f"pid {holder['pid']}" + (f"; {progress}" if progress else "")
    if progress:
        return "partly done", progress
    if place.moved:
        return "to run", f"its usual folder was made with other settings ({describe_changes(place.changed)})"
    return "to run", ""


def experiment_status(config: ExperimentConfig | None = None, **overrides) -> list[StepStatus]:
    """Each step of the experiment (as `run_experiment` with the same settings would take it) and its state."""
    from kdcompress.experiment.run import accuracy_cache_dir, placed_steps

    cfg, placed = placed_steps(config, **overrides)
    measured = AccuracyCache(accuracy_cache_dir(cfg, Path(cfg.out).expanduser())).languages_by_model()
    bench = next((settings for name, _, settings in placed if name == "benchmark"), None)
    models = set(bench["models"].values()) if bench else set()
    languages = 1 + len(bench["target_langs"]) if bench else 0
    rows = []
    for name, place, _ in placed:
        state, progress = _state(place)
        accuracy = f"{measured[str(place.folder)]}/{languages}" if str(place.folder) in models else ""
        rows.append(StepStatus(name, str(place.folder), state, progress, accuracy))
    return rows


def print_status(rows: list[StepStatus], console: Console) -> None:
    table = Table(title="experiment steps, in the order of a serial run", title_justify="left")
    for column in ("step", "state", "progress", "accuracy measured", "folder"):
        table.add_column(column)
    colours = {"done": "green", "running": "cyan", "partly done": "yellow", "to run": "dim"}
    for row in rows:
        table.add_row(row.name, f"[{colours[row.state]}]{row.state}[/]", row.progress, row.accuracy, row.folder)
    console.print(table)
    counts = Counter(row.state for row in rows)
    if counts["running"]:
        what_next = ": a run is under way"
    elif counts["done"] < len(rows):
        what_next = ": run the same `kdcompress experiment` command to continue"
    else:
        what_next = ": every step is done"
    console.print(", ".join(f"{counts[state]} {state}" for state in colours if counts[state]) + what_next)
