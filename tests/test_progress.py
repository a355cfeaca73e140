"""Progress and messages in a log: rich draws nothing there, so a plain line per task every interval and at its
end; a message keeps its one line."""

from __future__ import annotations

import io

from rich.console import Console

from kdcompress.console import stderr_console
from kdcompress.progress import Progress


def test_a_log_gets_a_plain_line_per_task_at_each_interval():
    log = io.StringIO()
    with Progress(console=Console(file=log), log_interval=3600, transient=True) as progress:
        task = progress.add_task("[bold]student KD", total=4, loss=1.0)
        for step in range(4):
            progress.update(task, advance=1, loss=0.5 / (step + 1))
    assert "student KD:" not in log.getvalue()  # a task shorter than the interval says nothing in a log

    log = io.StringIO()
    with Progress(console=Console(file=log), log_interval=0, transient=True) as progress:
        task = progress.add_task("[bold]student KD", total=2, loss=1.0)
        progress.update(task, advance=1, loss=0.5)
        progress.update(task, advance=1, loss=0.25)
        progress.advance(task)  # past the end: logged once, not again
    assert [line for line in log.getvalue().splitlines() if line.startswith("student KD:")] == [
        "student KD: 1/2 (50%), 0:00:00 elapsed, loss 0.5", "student KD: 2/2 (100%), 0:00:00 elapsed, loss 0.25"]


def test_a_terminal_gets_no_plain_lines():
    log = io.StringIO()
    with Progress(console=Console(file=log, force_terminal=True), log_interval=0) as progress:
        task = progress.add_task("corpus", total=1)
        progress.advance(task)
    assert "corpus: 1/1" not in log.getvalue()


def test_a_run_of_short_tasks_still_says_a_line_each_interval(monkeypatch):
    """Each task shorter than the interval, together longer: a line once the display has been quiet that long."""
    clock = [1000.0]
    monkeypatch.setattr("kdcompress.progress.time.monotonic", lambda: clock[0])
    log = io.StringIO()
    with Progress(console=Console(file=log), log_interval=60, transient=True) as progress:
        for name in ("accuracy a", "accuracy b", "accuracy c", "accuracy d"):
            task = progress.add_task(name, total=2)
            for _ in range(2):
                clock[0] += 20  # every task lasts 40 s
                progress.advance(task)
    said = [line.split(":")[0] for line in log.getvalue().splitlines() if line.startswith("accuracy")]
    assert said == ["accuracy b", "accuracy c"]  # at 60 s and at 120 s: 60 s of quiet, then a line


def test_a_message_keeps_its_line_in_a_log(capsys):
    """In a log or a pipe rich wrapped messages at a made-up 80 columns, splitting "resuming the unfinished run in
    <path>" over two lines; kdcompress's stderr console leaves wrapping to terminals."""
    message = "resuming the unfinished run in " + "runs/xnli_converged/students/" * 4 + "none-s2.partial"
    stderr_console().print(message)
    assert capsys.readouterr().err == message + "\n"
