"""What the CLI does with an exception: a KDCompressError, an OS fault or a wrapped Ctrl-C becomes one line (exit 2,
or 130 for Ctrl-C); anything else is a bug and keeps its traceback. `user_errors` wraps every command."""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable

import typer

from rich.console import Console
from rich.text import Text

from kdcompress.errors import KDCompressError
from kdcompress.os_errors import find_os_fault, interrupted, os_fault_message

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
_err_console = Console(stderr=True)


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


def user_errors(fn: Callable) -> Callable:
    """Turn a KDCompressError into one red line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KDCompressError as exc:
            # A Text, not a markup string: messages quote things like "[distill]" that rich would eat.
            _err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            _err_console.print("[bold red]interrupted[/]: nothing half-written was published; distill, "
                              "finetune-teacher and experiment keep finished stages and checkpoints, so rerun the "
                              "same command (with --resume for distill) to continue")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as exc:  # an OS fault (full disk, EACCES, closed pipe) or a Ctrl-C a library wrapped
            raise typer.Exit(code=report_fault(exc, _err_console)) from None

    return wrapper
