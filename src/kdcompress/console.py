"""The consoles of kdcompress: one on stderr for every message and progress line, one on stdout for the tables.

On a terminal rich wraps long lines at the terminal's width. In a log file or a pipe it has no width to go by and
wrapped at a made-up 80 columns, which split a message such as "resuming the unfinished run in <path>" over two
lines, one grep misses, and gave a worker's labelled line (kdcompress.experiment.worker_output) its label twice.
There a message keeps its one line, and tables and the closing state of a progress bar get 160 columns instead of
being squashed or cut."""

from __future__ import annotations

import os
import sys

from rich.console import Console


LOG_WIDTH = 160


def stderr_console(**options) -> Console:
    return Console(stderr=True, soft_wrap=not _is_terminal(sys.stderr), width=_width(sys.stderr), **options)


def report_console() -> Console:
    """For the tables on stdout: as wide as the terminal, or wide enough not to squash them in a log file."""
    return Console(width=_width(sys.stdout))


def _width(stream) -> int | None:
    """None (rich asks the terminal, or COLUMNS where set) on a terminal; LOG_WIDTH in a log or a pipe."""
    return None if _is_terminal(stream) or "COLUMNS" in os.environ else LOG_WIDTH


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream: no terminal
        return False
