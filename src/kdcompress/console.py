"""The consoles of kdcompress: one on stderr for every message and progress line, one on stdout for the tables.

On a terminal rich wraps long lines at the terminal's width. In a log file or a pipe it has no width to go by and
wrapped at a made-up 80 columns, which split a message such as "resuming the unfinished run in <path>" over two
lines, one grep misses, and gave a worker's labelled line (kdcompress.experiment.worker_output) its label twice.
There a message now keeps its one line, and a table is given room (160 columns) instead of being squashed."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def stderr_console(**options) -> Console:
    return Console(stderr=True, soft_wrap=not _is_terminal(sys.stderr), **options)


def report_console() -> Console:
    """For the tables on stdout: as wide as the terminal, or wide enough not to squash them in a log file."""
    redirected = not _is_terminal(sys.stdout) and "COLUMNS" not in os.environ
    return Console(width=160 if redirected else None)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream: no terminal
        return False
