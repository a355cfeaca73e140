"""Steps of an experiment run side by side, each in a process of its own.

One distillation leaves a GPU mostly idle (batches of 32 on a 6-layer encoder are bound by Python, the
tokenizer and kernel launches, about 20 steps a second on an H100), so the students of every arm and seed are
independent jobs worth running together; on a CPU each worker gets its share of the cores. A step is a
module-level function and its keyword arguments (processes are spawned: CUDA cannot be forked), and returns
the seconds it took; the parent alone decides reuse and records settings (kdcompress.reuse).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from kdcompress import stopping
from kdcompress.experiment.worker_output import label_worker_output, labelled


def run_step(function: Callable[..., Any], kwargs: dict, target: Path, resume: bool) -> float:
    """Call `function(**kwargs, out=target, resume=resume)`: the shape of distill and finetune_teacher."""
    started = time.perf_counter()
    function(**kwargs, out=str(target), resume=resume)
    return time.perf_counter() - started


def _labelled_call(label: str, note: str, function: Callable[..., Any], kwargs: dict) -> Any:
    """`function(**kwargs)` in a worker, its output lines labelled (experiment.worker_output), after a line saying
    that it started: in a pool a step is queued when submitted and starts when a worker is free."""
    global _stopped_by
    if _stopped_by is not None:
        # The executor hands each worker its next call before the current one ends: after a stop that call must
        # not run (a stopped CPU XNLI study went on to train a queued student, and its experiment waited for it).
        raise stopping.Stopped(_stopped_by)
    with labelled(label):
        print(f"started{note}", file=sys.stderr, flush=True)
        try:
            with stopping.stop_signals():
                return function(**kwargs)
        except stopping.Stopped as stop:
            _stopped_by = stop.signum
            if os.getppid() != _parent_pid:  # stopped as its parent died: nobody waits for the worker's next step
                os._exit(128 + stop.signum)
            raise


def _die_with_parent(parent: int) -> None:
    """Ask Linux to end this worker when the experiment process ends, however it ends (a SIGTERM or kill -9 skips
    every clean-up): an orphaned worker went on training for minutes, holding its step's lock and the cores."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere an orphan ends at its step's end
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>; the standard library has no prctl
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(1)


_parent_pid = 0
_stopped_by: int | None = None  # the signal that stopped a step of this worker: it runs nothing more


def _on_stop_between_steps(signum: int, _frame) -> None:
    """SIGTERM to a worker waiting for its next step. The parent's stop must not end it: a waiting worker holds the
    executor's call-queue lock, and dying with it left the other worker (its training step stopped, its checkpoint
    saved) unable to read the executor's farewell, and the experiment waiting for both until a second SIGTERM. The
    executor ends a waiting worker itself when the pool shuts down; only the parent's death (prctl, above) ends it
    here, since then nobody reads the queue."""
    if os.getppid() != _parent_pid:
        os._exit(128 + signum)


def _start_worker(threads: int, parent: int) -> None:
    global _parent_pid
    _parent_pid = parent
    _die_with_parent(parent)
    # While a step runs, the parent's death (above), the parent's stop and a Ctrl-C are stop requests: a training
    # step ends at its next optimizer step with a checkpoint (kdcompress.stopping, in `_labelled_call`). Between
    # steps, see `_on_stop_between_steps`; Ctrl-C reaches a worker through the parent's stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_stop_between_steps)
    label_worker_output()
    import torch

    from kdcompress.quiet import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()


def worker_threads(workers: int) -> int:
    """Each worker's share of the physical cores (torch's default thread count), at least one."""
    import torch

    return max(1, torch.get_num_threads() // workers)


class StepPool:
    """`submit` runs a step in a worker process, or at once when there is one worker (the serial experiment)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(worker_threads(workers), os.getpid()))

    def submit(self, name: str, function: Callable[..., Any], kwargs: dict, target: Path, resume: bool) -> Future:
        """A step (`run_step`) named `name`: its future gives the seconds it took."""
        return self.call(name, run_step, {"function": function, "kwargs": kwargs, "target": target, "resume": resume},
                         note=" (resuming its checkpoint)" if resume else "")

    def call(self, name: str, function: Callable[..., Any], kwargs: dict, note: str = "") -> Future:
        """Any module-level `function(**kwargs)` in a worker process, its output labelled `name` (at once, and
        unlabelled, with one worker)."""
        if self._pool is None:
            done: Future = Future()
            done.set_result(function(**kwargs))
            return done
        # A stop raised inside submit would leave the executor's shutdown lock held, and the clean-up, which
        # shuts the pool down, waiting for it forever.
        with stopping.deferred():
            return self._pool.submit(_labelled_call, name, note, function, kwargs)

    def close(self, cancel: bool = False) -> None:
        """Wait for the workers to end; with `cancel` (the experiment is stopping), queued steps are dropped and
        the running ones asked to stop (a training step then saves a checkpoint first)."""
        if self._pool is not None:
            if cancel:
                self._stop_workers()
            try:
                self._pool.shutdown(wait=True, cancel_futures=cancel)
            except KeyboardInterrupt:  # a second request while the workers stop: they stop at once
                self._stop_workers()
                raise
            self._pool = None

    def _stop_workers(self) -> None:
        # The executor's private table of worker processes: the public API offers no way to reach a running task,
        # and the process tree also holds multiprocessing's resource tracker, which must not be stopped.
        for process in list(getattr(self._pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(process.pid, signal.SIGTERM)

    def __enter__(self) -> "StepPool":
        return self

    def __exit__(self, kind, *_) -> None:
        self.close(cancel=kind is not None)


def cpu_note(workers: int) -> str:
    return f"{workers} steps side by side, {worker_threads(workers)} thread(s) each (of {os.cpu_count()} CPUs)"
