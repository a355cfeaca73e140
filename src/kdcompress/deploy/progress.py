"""What `export-onnx` shows while it runs: stage-by-stage progress, timings and the closing summary."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Progress:
    """Stage-by-stage progress on stderr (rich), silent when `enabled` is False; records each stage's time."""

    def __init__(self, enabled: bool):
        from kdcompress.console import stderr_console

        self.console = stderr_console(quiet=not enabled)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, key: str, text: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(f"[bold]{text}[/]…", spinner="dots"):
            yield
        self.timings[key] = round(time.perf_counter() - start, 2)
        self.console.print(f"[green]✓[/] {text} [dim]({self.timings[key]:.1f} s)[/]", highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def print_summary(progress: Progress, report: dict) -> None:
    """The per-language check table (and dev accuracy, with --accuracy-goal), then the file's size."""
    from rich.table import Table

    check = report["check"]
    final = check["final"]
    table = Table(title=f"export check: {check['source']}", title_justify="left")
    table.add_column("language")
    table.add_column("n", justify="right")
    table.add_column("max |Δlogit|", justify="right")
    table.add_column("argmax agreement", justify="right")
    accuracy = report.get("accuracy") or {}
    if accuracy:
        table.add_column("dev acc fp32", justify="right")
        table.add_column(f"dev acc {report['precision']}", justify="right")
    for lang, row in final["per_language"].items():
        cells = [lang, str(row["n"]), f"{row['max_abs_logit_diff']:.2e}", f"{row['argmax_agreement']:.1%}"]
        if accuracy:
            cells += [f"{accuracy['fp32_accuracy'].get(lang, float('nan')):.1%}",
                      f"{accuracy['int8_accuracy'].get(lang, float('nan')):.1%}"]
        table.add_row(*cells)
    progress.console.print(table)
    sizes = report["sizes"]
    progress.note(f"{report['files']['model']}: {sizes['model_bytes'] / 1e6:.1f} MB "
                  f"({sizes['model_vs_fp32']:.2f}x the fp32 export), inputs: "
                  f"{', '.join(i['name'] for i in report['onnx']['inputs'])}")
