"""What the CLI does with an exception: a KDCompressError, an OS fault or a (wrapped) Ctrl-C or SIGTERM becomes one
line (exit 2, or 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM); anything else is a bug and keeps its
traceback. `user_errors` wraps every command and handles its stop signals (kdcompress.stopping)."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from typing import Callable

import typer

from rich.console import Console
from rich.text import Text

from kdcompress import stopping
from kdcompress.console import stderr_console
from kdcompress.errors import KDCompressError
from kdcompress.os_errors import find_os_fault, interruption, os_fault_message

EXIT_USER_ERROR = 2
_err_console = stderr_console()


def report_fault(exc: Exception, console: Console) -> int:
    """Print one line for `exc` and return the exit status; re-raise `exc` when it is neither kind of fault."""
    stop = interruption(exc)
    if stop is not None:
        return _report_interruption(stop, console)
    fault = find_os_fault(exc)
    if fault is None:
        raise exc
    if fault.errno == errno.EPIPE:
        _silence_stdout()
    console.print(Text.assemble(("error: ", "bold red"), os_fault_message(fault)), highlight=False, soft_wrap=True)
    return EXIT_USER_ERROR


def _report_interruption(stop: KeyboardInterrupt, console: Console) -> int:
    signum = stop.signum if isinstance(stop, stopping.Stopped) else signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    console.print(f"[bold red]{what}[/]: nothing half-written was published; distill, finetune-teacher and "
                  "experiment keep finished stages and checkpoints, so rerun the same command (with --resume for "
                  "distill) to continue")
    return 128 + signum


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
            with stopping.stop_signals():
                return fn(*args, **kwargs)
        except KDCompressError as exc:
            # A Text, not a markup string: messages quote things like "[distill]" that rich would eat.
            _err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:
            raise typer.Exit(code=_report_interruption(exc, _err_console)) from None
        except Exception as exc:  # an OS fault (full disk, EACCES, closed pipe) or a Ctrl-C a library wrapped
            raise typer.Exit(code=report_fault(exc, _err_console)) from None

    return wrapper
