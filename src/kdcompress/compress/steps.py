"""Each step of `compress` writes one folder under work/, named by a hash of the settings that made it
(kdcompress.reuse's rule, with the record written into the folder).

So a step is reused only when its settings match (a changed setting makes a new folder, never an old result
under new settings), and an interrupted run continues where it stopped: distill resumes its `.partial` folder,
the other steps publish atomically and simply run again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from kdcompress.console import stderr_console
from kdcompress.io import write_json_atomic
from kdcompress.reuse import record_settings, settings_hash
from kdcompress.runtime.backends import read_json_dict

WALL_TIME_RECORD = "step-wall-time.json"

console = stderr_console()

# Settings that change where or how a step runs, not what it makes.
_NOT_PART_OF_THE_RESULT = {"out", "resume", "overwrite", "progress", "quiet", "command", "teacher_logits_cache"}


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in _NOT_PART_OF_THE_RESULT}


class Steps:
    def __init__(self, work: Path):
        self.work = work
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def folder(self, kind: str, name: str, settings: dict[str, Any]) -> Path:
        return self.work / kind / f"{name}-{settings_hash(result_settings(settings))}"

    def run(self, label: str, target: Path, make: Callable[[Path, bool], Any],
            settings: dict[str, Any] | None = None) -> Path:
        """`make(target, resume)` unless `target` exists; `resume` when an interrupted distill left `.partial`.
        `settings` (those `folder` named it by) are recorded in the finished folder."""
        if target.exists():
            console.print(f"[dim]{label}: reused {target} (same settings)[/]")
            self.reused.append(label)
            seconds = read_json_dict(target / WALL_TIME_RECORD).get("seconds")
            if isinstance(seconds, (int, float)):
                self.timings[label] = seconds  # what it took when it ran: the report's compute table
            return target
        console.rule(f"[bold]{label}")
        started = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        make(target, target.with_name(target.name + ".partial").exists())
        if settings is not None:
            record_settings(target, result_settings(settings))
        self.timings[label] = round(time.perf_counter() - started, 1)
        write_json_atomic(target / WALL_TIME_RECORD, {"seconds": self.timings[label]})
        return target
