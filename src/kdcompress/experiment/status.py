"""`experiment-status`: where an experiment stands, read from its folder; nothing is run or written.

A study too long for one sitting (the converged XNLI study takes many hours on 2 cores) is continued by running
the same command again. This tells, before that, what the next run will reuse, resume from a checkpoint, or run,
using the run's own rules (kdcompress.reuse): a folder made with other settings shows as a step still to run, and
about how long what is left takes, at the pace of the steps already done (so that a study split across sessions
can be planned: is one more session enough?)."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
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
    # One worker's seconds still to spend on the step (training, then the model's test accuracy), at the pace of the
    # steps already done, and the parts nothing done yet tells ("step": no finished step of its kind; "test
    # accuracy": no measurement whose time was recorded).
    seconds_left: float = 0.0
    not_estimated: tuple[str, ...] = ()


def partial_progress(folder: Path) -> str:
    """What `<folder>.partial` (training/run_dir.py) holds: finished stages, and each checkpoint's step."""
    work = folder.with_name(folder.name + ".partial")
    stages = work / "stages"
    parts = [f"{stage.name} done" for stage in sorted(stages.iterdir()) if stage.is_dir()] if stages.is_dir() else []
    for stage, step, total, seconds in _checkpoints(work):
        if step is None:
            parts.append(f"{stage}: unreadable checkpoint")
            continue
        # checkpoints written before the total and the time were recorded say only their step
        text = f"{stage}: step {step}" + (f"/{total}" if total else "")
        if total and seconds and step:
            text += f", ~{seconds / step * (total - step) / 60:.0f} min left at its pace so far"
        parts.append(text)
    return "; ".join(parts)


def _checkpoints(work: Path) -> list[tuple[str, int | None, int | None, float | None]]:
    """(stage, step, total steps, training seconds so far) of each checkpoint; step None where unreadable."""
    found = []
    for record in sorted(work.glob("checkpoints/*/latest/progress.json")):
        try:
            progress = json.loads(record.read_text(encoding="utf-8"))
            found.append((record.parents[1].name, int(progress["step"]), progress.get("total_steps"),
                          progress.get("seconds")))
        except (OSError, ValueError, KeyError, TypeError):
            found.append((record.parents[1].name, None, None, None))
    return found


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
    entries = AccuracyCache(accuracy_cache_dir(cfg, Path(cfg.out).expanduser())).entries()  # read once
    measured = Counter(entry["model_dir"] for entry in entries)
    bench = next((settings for name, _, settings in placed if name == "benchmark"), None)
    models = set(bench["models"].values()) if bench else set()
    languages = 1 + len(bench["target_langs"]) if bench else 0
    rows = []
    for name, place, _ in placed:
        state, progress = _state(place)
        accuracy = f"{measured[str(place.folder)]}/{languages}" if str(place.folder) in models else ""
        rows.append(StepStatus(name, str(place.folder), state, progress, accuracy))
    langs = [bench["source_lang"], *bench["target_langs"]] if bench else []
    return _with_estimates(rows, [place for _, place, _ in placed], models, langs, entries)


def _kind(name: str) -> str:
    """'distill finetune-s2' -> 'distill finetune': steps that differ only in their seed take about as long."""
    return re.sub(r"-s\d+$", "", name)


def _training_seconds(folder: Path) -> float | None:
    """A finished step's training time from its distill.json, earlier invocations included."""
    try:
        record = json.loads((folder / "distill.json").read_text(encoding="utf-8"))
        return float(record["wall_seconds"]) + float(record.get("earlier_invocations_seconds") or 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _with_estimates(rows: list[StepStatus], places: list[StepPlace], models: set[str], langs: list[str],
                    entries: list[dict]) -> list[StepStatus]:
    kinds: dict[str, list[float]] = {}
    for row, place in zip(rows, places):
        seconds = _training_seconds(place.folder) if row.state == "done" else None
        if seconds is not None:
            kinds.setdefault(_kind(row.name), []).append(seconds)
    kind_of_folder = {row.folder: _kind(row.name) for row in rows}
    # seconds per test example: of the same kind of model where measured, else of any (entries before this record
    # was kept have no seconds)
    paces: dict[str, list[float]] = {}
    examples: dict[str, int] = {}
    measured: dict[str, set[str]] = {}
    for entry in entries:
        result, lang = entry.get("result") if isinstance(entry.get("result"), dict) else {}, entry.get("lang")
        measured.setdefault(entry["model_dir"], set()).add(lang)
        if isinstance(result.get("n"), int) and result["n"] > 0:
            examples[lang] = result["n"]
            if isinstance(entry.get("seconds"), (int, float)) and entry["seconds"] > 0:
                pace = entry["seconds"] / result["n"]
                paces.setdefault(kind_of_folder.get(entry["model_dir"], ""), []).append(pace)
                paces.setdefault("*", []).append(pace)

    estimated = []
    for row, place in zip(rows, places):
        seconds, unknown = 0.0, []
        training = 0.0 if row.state == "done" else _training_left(place, kinds.get(_kind(row.name)))
        if training is None:
            unknown.append("step")
        else:
            seconds += training
        missing = [lang for lang in langs if lang not in measured.get(row.folder, set())] if row.folder in models \
            else []
        pace = paces.get(_kind(row.name)) or paces.get("*")
        if missing and (not pace or any(lang not in examples for lang in missing)):
            unknown.append("test accuracy")
        elif missing:
            seconds += statistics.median(pace) * sum(examples[lang] for lang in missing)
        estimated.append(dataclasses.replace(row, seconds_left=seconds, not_estimated=tuple(unknown)))
    return estimated


def _training_left(place: StepPlace, done_of_its_kind: list[float] | None) -> float | None:
    """At the checkpoint's own pace where it has one (its stage: an experiment's steps train one stage each), else as
    long as the finished steps of its kind took."""
    work = place.folder.with_name(place.folder.name + ".partial")
    for _, step, total, seconds in _checkpoints(work):
        if step and total and seconds:
            return seconds / step * (total - step)
    return statistics.median(done_of_its_kind) if done_of_its_kind else None


def print_status(rows: list[StepStatus], console: Console, *, workers: int = 1) -> None:
    table = Table(title="experiment steps, in the order of a serial run", title_justify="left")
    for column in ("step", "state", "progress", "accuracy measured", "time left", "folder"):
        table.add_column(column)
    colours = {"done": "green", "running": "cyan", "partly done": "yellow", "to run": "dim"}
    for row in rows:
        table.add_row(row.name, f"[{colours[row.state]}]{row.state}[/]", row.progress, row.accuracy,
                      _time_left_cell(row), row.folder)
    console.print(table)
    counts = Counter(row.state for row in rows)
    if counts["running"]:
        what_next = ": a run is under way"
    elif counts["done"] < len(rows):
        what_next = ": run the same `kdcompress experiment` command to continue"
    else:
        what_next = ": every step is done"
    console.print(", ".join(f"{counts[state]} {state}" for state in colours if counts[state]) + what_next)
    left = time_left(rows, workers)
    if left:
        console.print(left)


def time_left(rows: list[StepStatus], workers: int) -> str:
    """'about 5.2 h of one worker's time left ...', or "" when every step is done."""
    known = sum(row.seconds_left for row in rows)
    unknown = {part: [row.name for row in rows if part in row.not_estimated] for part in ("step", "test accuracy")}
    if not known and not any(unknown.values()):
        return ""
    text = f"about {_duration(known) or '0 min'} of one worker's time left, at the pace of the steps done so far"
    if workers > 1:
        text += f" (about {_duration(known / workers) or '0 min'} with {workers} workers side by side)"
    if unknown["step"]:
        text += f"; plus {_count(unknown['step'], 'step')} with nothing of " \
                f"{'its' if len(unknown['step']) == 1 else 'their'} kind done yet " \
                f"({', '.join(unknown['step'])})"
    if unknown["test accuracy"]:
        text += f"; plus the test accuracy of {_count(unknown['test accuracy'], 'model')}, whose pace no " \
                "measurement in this folder has recorded yet"
    return text


def _count(names: list[str], noun: str) -> str:
    return f"{len(names)} {noun}" + ("" if len(names) == 1 else "s")


def _time_left_cell(row: StepStatus) -> str:
    parts = [_duration(row.seconds_left)] if row.seconds_left else []
    parts += [f"{part} ?" for part in row.not_estimated]
    return " + ".join(parts)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return ""
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"
