"""What the CLI entry point does with an exception that is not a KDCompressError: an OS fault or a wrapped Ctrl-C
becomes one line (exit 2, or 130 for Ctrl-C); anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import os
import sys

from rich.console import Console
from rich.text import Text

from kdcompress.os_errors import find_os_fault, interrupted, os_fault_message

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def report_fault(exc: Exception, console: Console) -> int:
    """Print one line for `exc` and return the exit status; re-raise `exc` when it is neither kind of fault."""
    if interrupted(exc):
        console.print("[bold red]interrupted[/]: nothing half-written was published; rerun the same command "
                      "(with --resume for distill) to continue")
        return EXIT_INTERRUPTED
    fault = find_os_fault(exc)
    if fault is None:
        raise exc
    if fault.errno == errno.EPIPE:
        _silence_stdout()
    console.print(Text.assemble(("error: ", "bold red"), os_fault_message(fault)), highlight=False, soft_wrap=True)
    return EXIT_USER_ERROR


def _silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so that the interpreter's closing flush does
    not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
