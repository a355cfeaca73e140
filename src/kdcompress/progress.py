"""rich's progress bars on a terminal, and a plain line per task every minute in a log file or a pipe.

rich draws nothing while its console is not a terminal (only the last state, at the end), so a 15-minute
distillation written to a log sat silent. This subclass keeps rich's API and columns and adds the plain lines;
every progress display of kdcompress is made here."""

from __future__ import annotations

import time

from rich import progress as rich_progress
from rich.progress import TaskID
from rich.text import Text

LOG_INTERVAL_SECONDS = 60.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress(rich_progress.Progress):
    def __init__(self, *columns, log_interval: float = LOG_INTERVAL_SECONDS, **kwargs):
        super().__init__(*columns, **kwargs)
        self._plain = not self.console.is_terminal and not self.disable
        self._log_interval = log_interval
        self._logged_at: dict[TaskID, float] = {}
        self._line_at = time.monotonic()  # the last plain line of any task
        self._done: set[TaskID] = set()

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._logged_at[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if not self._plain or task_id in self._done:
            return
        with self._lock:
            task = self._tasks[task_id]
        now = time.monotonic()
        # Only at the interval: rich itself prints the final state of a lasting display when it stops, and a
        # command that fails after a short task must still say one line, its error. The interval runs per task and
        # for the display as a whole: a benchmark of 13 models, a short task each, left a log silent for 3 minutes.
        if (now - self._logged_at.get(task_id, now) < self._log_interval
                and now - self._line_at < self._log_interval):
            return
        self._logged_at[task_id] = self._line_at = now
        if task.finished:
            self._done.add(task_id)
        self.console.print(plain_line(task), highlight=False, markup=False, soft_wrap=True)


def plain_line(task: rich_progress.Task) -> str:
    """'distill: 120/600 (20%), 0:02:10 elapsed, ~0:08:40 left, loss 0.4123'."""
    done = f"{task.completed:.0f}/{task.total:.0f} ({task.percentage:.0f}%)" if task.total else \
        f"{task.completed:.0f}"
    parts = [f"{Text.from_markup(task.description).plain}: {done}", f"{_duration(task.elapsed)} elapsed"]
    if task.total and not task.finished and task.time_remaining is not None:
        parts.append(f"~{_duration(task.time_remaining)} left")
    parts += [f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
              for name, value in task.fields.items()]
    return ", ".join(parts)
