"""How an experiment runs its steps: each once per set of settings (kdcompress.reuse), in the step pool
(experiment.step_pool), and each model trained in the run measured for accuracy as soon as it exists."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from pathlib import Path
from typing import Iterable, Iterator

from kdcompress.bench.accuracy_cache import measure_into_cache
from kdcompress.console import stderr_console
from kdcompress.experiment.step_pool import StepPool
from kdcompress.reuse import StepPlace, describe_changes, place_step, record_settings

console = stderr_console()


class Steps:
    """Runs each named step once per set of settings (kdcompress.reuse): a folder made with the same settings is
    reused; one made with other settings stays, and the step runs again into a folder named by the settings' hash.
    `submit` hands a step to the pool (experiment.step_pool) and returns at once.

    With `dry`, nothing runs and nothing is written: each step is only placed, and `placed` lists them in order
    (name, where and whether it is done, its settings), for `experiment-status`."""

    def __init__(self, out: Path, pool: StepPool | None = None, *, dry: bool = False):
        self.out = out
        self.pool = pool or StepPool(1)
        self.dry = dry
        self.timings: dict[str, float] = {}
        self.placed: list[tuple[str, StepPlace, dict]] = []

    def _place(self, name: str, target: Path, settings: dict, legacy):
        place = place_step(target, settings, legacy, record=not self.dry)
        self.placed.append((name, place, settings))
        if self.dry:
            return place
        if place.reuse:
            console.print(f"[dim]{name}: {place.folder} exists, made with these settings: reused[/]")
        elif place.moved:
            console.print(f"[yellow]{name}: {target} was made with other settings ({describe_changes(place.changed)})"
                          f"; running it again into {place.folder}[/]")
        return place

    def __call__(self, name: str, target: Path, make, settings: dict, legacy=None) -> Path:
        place = self._place(name, target, settings, legacy)
        if place.reuse or self.dry:
            return place.folder
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        partial = place.folder.with_name(place.folder.name + ".partial")
        make(place.folder, partial.exists())  # a .partial folder is an interrupted distill: resume it
        record_settings(place.folder, settings)
        self.timings[name] = round(time.perf_counter() - started, 1)
        return place.folder

    def submit(self, name: str, target: Path, function, kwargs: dict, settings: dict, legacy=None) -> "Pending":
        """`function(**kwargs, out=folder, resume=...)` in the pool; `.result()` waits and records it."""
        place = self._place(name, target, settings, legacy)
        if place.reuse or self.dry:
            return Pending(self, name, place.folder, settings, None)
        resume = place.folder.with_name(place.folder.name + ".partial").exists()
        if self.pool.workers > 1:  # it starts when a worker is free, and says so in its labelled lines
            console.print(f"[dim]{name}: queued[/]")
        else:
            console.rule(f"[bold]{name}")
        return Pending(self, name, place.folder, settings,
                       self.pool.submit(name, function, kwargs, place.folder, resume))


class Pending:
    """A submitted step: its folder is known at once, its settings are recorded once it has finished."""

    def __init__(self, steps: Steps, name: str, folder: Path, settings: dict, future):
        self.steps, self.name, self.folder, self.settings, self.future = steps, name, folder, settings, future

    def done(self) -> bool:
        """Whether the step's folder is complete (reused, or its run has ended: `result` then returns at once)."""
        return self.future is None or self.future.done()

    def result(self) -> Path:
        if self.future is not None:
            seconds = self.future.result()
            record_settings(self.folder, self.settings)
            self.steps.timings[self.name] = round(seconds, 1)
            if self.steps.pool.workers > 1:
                console.print(f"[green]{self.name}: done in {seconds:.0f} s[/]")
            self.future = None
        return self.folder


def wait_for_any(futures: Iterable[Future]) -> None:
    """Return once one of `futures` still running has ended (at once when none is running)."""
    running = [future for future in futures if not future.done()]
    if running:
        wait(running, return_when=FIRST_COMPLETED)


def completion_order(pending: dict) -> Iterator:
    """The keys of `pending` steps: those reused first, then the others as they finish."""
    running = {step.future: key for key, step in pending.items() if step.future is not None}
    yield from (key for key, step in pending.items() if step.future is None)
    yield from (running[future] for future in as_completed(running))


class EarlyAccuracy:
    """Each model of the run is measured in the pool as soon as it exists, beside the students still training, into
    the benchmark's accuracy cache (bench.accuracy_cache), which the benchmark step then reads back. On the lent GPU
    the 12 students trained in 6.5 minutes and a benchmark of all 13 models after them outran the call. A model
    reused from an earlier run is measured too: the languages the cache holds come back at once, and a study spread
    over sessions measures the others as it goes rather than all at its end."""

    def __init__(self, pool: StepPool, *, cache: str, **settings):
        self.pool, self.cache, self.settings = pool, cache, settings
        self.running: dict[str, Future] = {}

    def after(self, step: Pending, name: str) -> Path:
        folder = step.result()
        if not step.steps.dry and name not in self.running:
            if self.pool.workers > 1:
                console.print(f"[dim]accuracy {name}: queued[/]")
            self.running[name] = self.pool.call(f"accuracy {name}", measure_into_cache,
                                                {"model": str(folder), "cache": self.cache, **self.settings})
        return folder

    def in_flight(self) -> list[Future]:
        return [future for future in self.running.values() if not future.done()]

    def collect(self, timings: dict[str, float]) -> None:
        for name, future in self.running.items():
            seconds, measured = future.result()
            if measured:
                timings[f"accuracy {name}"] = round(seconds, 1)
                if self.pool.workers > 1:
                    console.print(f"[green]accuracy {name}: measured in {seconds:.0f} s[/]")
