"""Latency measurement: warm-up, interleaved rounds over models, and percentile summaries.

Why interleaved: on a shared machine, load and clock speed drift over minutes. Timing model A
for a minute and then model B lets that drift masquerade as a speedup, so every grid cell
runs all models round-robin (the order rotating every round) and drift hits them alike.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from kdcompress.bench.runners import Runner

REAL = "real"  # seq_len marker of the cells that feed the task's own sentences with dynamic padding
DISTINCT_BATCHES = 32  # enough different real-length batches to average over sentence lengths
SHUFFLE_SEED = 0


@dataclass(frozen=True)
class Cell:
    """One point of the latency grid: a batch size and a fixed length, or real lengths."""

    batch_size: int
    seq_len: int | str  # an int, or REAL

    @property
    def label(self) -> str:
        return f"b{self.batch_size}×{'real' if self.seq_len == REAL else f'L{self.seq_len}'}"

    @property
    def is_real(self) -> bool:
        return self.seq_len == REAL


def make_cells(batch_sizes: Sequence[int], seq_lens: Sequence[int], real_lengths: bool) -> list[Cell]:
    cells = [Cell(b, L) for b in batch_sizes for L in seq_lens]
    if real_lengths:
        cells += [Cell(b, REAL) for b in batch_sizes]
    return cells


def summarize(seconds: Sequence[float], rows_per_call: Sequence[int] | int) -> dict:
    """Median, p90, p99, mean (ms) and throughput (rows/s = all rows / all time) of timed calls."""
    samples = np.asarray(seconds, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no latency samples to summarize")
    rows = np.broadcast_to(np.asarray(rows_per_call, dtype=np.float64), samples.shape)
    median, p90, p99 = np.percentile(samples, [50, 90, 99]) * 1e3
    return {
        "median_ms": float(median),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(samples.mean() * 1e3),
        "min_ms": float(samples.min() * 1e3),
        "throughput_per_s": float(rows.sum() / samples.sum()),
        "samples": int(samples.size),
    }


@dataclass
class Workload:
    """The batches one runner is timed on in one cell, as text (end-to-end) and pre-tokenized (model only)."""

    texts: list[tuple[list[str], list[str | None]]]
    encoded: list[dict[str, np.ndarray]]
    pad_to: int | None

    @property
    def mean_tokens(self) -> float:
        return float(np.mean([e["input_ids"].shape[1] for e in self.encoded]))

    def rows(self, call: int) -> int:
        return len(self.texts[call % len(self.texts)][0])


def text_batches(pool: Sequence[tuple[str, str | None]], batch_size: int) -> list[tuple[list[str], list[str | None]]]:
    """Shuffled full batches of the pool (the same for every model, so they see the same sentences)."""
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(pool))
    wanted = min(DISTINCT_BATCHES * batch_size, len(pool) - len(pool) % batch_size) or len(pool)
    picked = [pool[i] for i in order[:wanted]]
    while len(picked) < batch_size:  # a pool smaller than one batch: repeat sentences to fill it
        picked += picked[: batch_size - len(picked)]
    batches = []
    for start in range(0, len(picked) - batch_size + 1, batch_size):
        chunk = picked[start:start + batch_size]
        batches.append(([t for t, _ in chunk], [p for _, p in chunk]))
    return batches


def make_workload(runner: Runner, cell: Cell, batches: list[tuple[list[str], list[str | None]]]) -> Workload:
    pad_to = None if cell.is_real else int(cell.seq_len)
    encoded = [runner.encode(texts, pairs, pad_to=pad_to) for texts, pairs in batches]
    return Workload(batches, encoded, pad_to)


def measure_cell(runners: Mapping[str, Runner], workloads: Mapping[str, Workload], *, warmup: int, repeats: int,
                 rounds: int, max_seconds: float, on_round: Callable[[], None] | None = None) -> dict[str, dict]:
    """Time every runner on its workload, model-only and end-to-end, interleaving models by round.

    Each round gives every model `repeats / rounds` calls; a model whose timed calls exceed
    `max_seconds` gets one call per remaining round, so even slow models keep `rounds` samples
    spread over the whole cell rather than all at its start.
    """
    names = list(runners)
    per_round = max(1, math.ceil(repeats / rounds))
    model_s = {n: [] for n in names}
    e2e_s = {n: [] for n in names}
    rows = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)

    for name in names:
        runner, work = runners[name], workloads[name]
        for call in range(warmup):
            texts, pairs = work.texts[call % len(work.texts)]
            runner.forward(work.encoded[call % len(work.encoded)])
            runner.logits(texts, pairs, pad_to=work.pad_to)

    primed: set[tuple] = set()
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call would be charged to whichever model was unlucky
    try:
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                runner, work = runners[name], workloads[name]
                calls = per_round if spent[name] < max_seconds else 1
                for _ in range(calls):
                    call = len(model_s[name])
                    encoded = work.encoded[call % len(work.encoded)]
                    texts, pairs = work.texts[call % len(work.texts)]
                    shape = (name, _shape_key(encoded))
                    if shape not in primed:
                        # A runtime's first call on a new input shape (OpenVINO reshapes and recompiles) would be
                        # charged to the model-only timer, which runs first: 6.1 ms against 4.0 end to end for a
                        # 6-layer student at real lengths. Both timers measure the steady state instead.
                        runner.forward(encoded)
                        primed.add(shape)
                    started = time.perf_counter()
                    runner.forward(encoded)
                    middle = time.perf_counter()
                    runner.logits(texts, pairs, pad_to=work.pad_to)
                    ended = time.perf_counter()
                    model_s[name].append(middle - started)
                    e2e_s[name].append(ended - middle)
                    rows[name].append(len(texts))
                    spent[name] += ended - started
                    if spent[name] >= max_seconds:
                        break
                if on_round:
                    on_round()
    finally:
        if gc_was_enabled:
            gc.enable()

    return {
        name: {
            "model_only": summarize(model_s[name], rows[name]),
            "end_to_end": summarize(e2e_s[name], rows[name]),
            "mean_tokens": workloads[name].mean_tokens,
        }
        for name in names
    }


def _shape_key(encoded) -> tuple:
    """The input shapes of one call (a feed dict of arrays or tensors)."""
    values = encoded.values() if isinstance(encoded, dict) else [encoded]
    return tuple(tuple(getattr(value, "shape", ())) for value in values)

