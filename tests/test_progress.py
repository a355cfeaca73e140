"""Progress in a log: rich draws nothing there, so a plain line per task every interval and at its end."""

from __future__ import annotations

import io

from rich.console import Console

from kdcompress.progress import Progress


def test_a_log_gets_plain_lines_at_the_interval_and_at_the_end():
    log = io.StringIO()
    with Progress(console=Console(file=log), log_interval=3600) as progress:
        task = progress.add_task("[bold]student KD", total=4, loss=1.0)
        for step in range(4):
            progress.update(task, advance=1, loss=0.5 / (step + 1))
    lines = [line for line in log.getvalue().splitlines() if line.startswith("student KD:")]
    assert lines == ["student KD: 4/4 (100%), 0:00:00 elapsed, loss 0.125"]  # interval not reached: the end only

    log = io.StringIO()
    with Progress(console=Console(file=log), log_interval=0) as progress:
        task = progress.add_task("corpus", total=2)
        progress.advance(task)
        progress.advance(task)
        progress.advance(task)  # past the end: logged once, not again
    assert [line.split(",")[0] for line in log.getvalue().splitlines() if line.startswith("corpus:")] == [
        "corpus: 1/2 (50%)", "corpus: 2/2 (100%)"]


def test_a_terminal_gets_no_plain_lines():
    log = io.StringIO()
    with Progress(console=Console(file=log, force_terminal=True), log_interval=0) as progress:
        task = progress.add_task("corpus", total=1)
        progress.advance(task)
    assert "corpus: 1/1" not in log.getvalue()
