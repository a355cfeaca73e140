"""Stopping a long command politely: SIGTERM (a scheduler's time limit, `kill`, `timeout`, a container stopping)
ends it as Ctrl-C does, and a training loop first finishes its optimizer step and saves a checkpoint.

Python's default for SIGTERM is to die at once: the CPU XNLI study's log just ended, with no line saying why, and
up to 50 steps (3 minutes of a CPU) since the last checkpoint were lost. Inside `at_safe_points()` a stop is only
noted and the loop calls `check()` between optimizer steps (weights and optimizer state agree there); anywhere
else, and at a second request, `Stopped` is raised at once. `Stopped` is a KeyboardInterrupt, so every clean-up
written for Ctrl-C (temporary folders removed, locks released, the CLI's one line) runs for it too.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Iterator

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop request (SIGINT or SIGTERM) ending the command."""

    def __init__(self, signum: int):
        super().__init__(signum)  # the only argument: a step worker's Stopped is pickled back as Stopped(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


# A repeat this soon after the first request is the same stop arriving twice (Ctrl-C reaches the experiment and its
# step workers, and the experiment passes the stop on to them), not a second request.
SAME_REQUEST_SECONDS = 2.0


class _State:
    requested: int | None = None
    requested_at = 0.0
    safe_points: list[str | None] = []  # the open at_safe_points() blocks, each with what it finishes first


def _on_stop_signal(signum: int, _frame) -> None:
    now = time.monotonic()
    if _State.safe_points and _State.requested is not None and now - _State.requested_at < SAME_REQUEST_SECONDS:
        return
    if _State.safe_points and _State.requested is None:
        _State.requested, _State.requested_at = signum, now
        if _State.safe_points[-1]:
            sys.stderr.write(f"{signal.Signals(signum).name}: stopping after {_State.safe_points[-1]} "
                             f"(send it again to stop at once)\n")
        return
    _State.requested = signum
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as stop requests for one command (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _on_stop_signal) for number in _STOP_SIGNALS}
    _State.requested = None
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _State.requested = None


@contextlib.contextmanager
def at_safe_points(finishing: str | None = None) -> Iterator[None]:
    """Within, a first stop request is only noted (and, where `finishing` says what the block completes before
    it stops, announced): the block calls `requested()`/`check()` where it can stop."""
    _State.safe_points.append(finishing)
    try:
        yield
    finally:
        _State.safe_points.pop()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a stop request must not cut in two (it holds a lock the clean-up needs): a request that comes
    meanwhile stops the command right after it."""
    with at_safe_points():
        yield
    check()


def requested() -> int | None:
    """The signal of a stop request noted inside `at_safe_points()`, if any."""
    return _State.requested


def check() -> None:
    """Raise `Stopped` if a stop was requested."""
    if _State.requested is not None:
        raise Stopped(_State.requested)
