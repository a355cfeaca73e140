"""`bench`: latency and per-language accuracy of several models on one task, in one report.

Order of work: check every input (cheap) before loading anything, load every model (so that a
broken one fails in seconds, not after an hour of timing), probe memory in fresh processes,
measure accuracy, then latency with models interleaved, and finally write the report atomically.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kdcompress.bench import accuracy as acc
from kdcompress.bench import memory as memory_probe
from kdcompress.bench.latency import REAL, Cell, make_cells, make_workload, measure_cell, text_batches
from kdcompress.bench.machine import machine_facts, physical_cores
from kdcompress.bench.report import REPORT_FILES, print_report, report_console, write_report
from kdcompress.bench.runners import DEFAULT_MAX_LENGTH, Runner, check_device, load_runner
from kdcompress.data.languages import parse_lang_list
from kdcompress.data.tasks import Example, Task, fingerprint, get_task, normalise_lang
from kdcompress.errors import KDCompressError
from kdcompress.io import atomic_output_dir, refuse_existing

DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_SEQ_LENS = (32, 128)
DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 30
DEFAULT_ROUNDS = 5
DEFAULT_MAX_SECONDS_PER_CELL = 3.0


def parse_model_specs(specs: Sequence[str]) -> dict[str, str]:
    """["teacher=runs/t", "runs/student"] -> {"teacher": "runs/t", "student": "runs/student"}."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/\\")).name, spec
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise KDCompressError(f"--model {spec!r} is not NAME=PATH; write e.g. --model student=runs/student")
        if name in models:
            raise KDCompressError(f"two models are named {name!r}; give each --model a different NAME")
        models[name] = path
    return models


def parse_int_list(value: str, option: str) -> tuple[int, ...]:
    """"1,8,32" -> (1, 8, 32), with a one-line error naming the option."""
    try:
        return tuple(int(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise KDCompressError(f"{option} must be comma-separated whole numbers like 1,8,32, got {value!r}") from None


def _positive_ints(values: Sequence[int], option: str) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(not isinstance(v, int) or v < 1 for v in values):
        shown = ",".join(map(str, values)) or "nothing"
        raise KDCompressError(f"{option} must be a list of positive whole numbers, got {shown}")
    return tuple(dict.fromkeys(values))


def _check_counts(**counts: tuple[int | float | None, int | float]) -> None:
    for option, (value, minimum) in counts.items():
        if value is not None and value < minimum:
            raise KDCompressError(f"--{option.replace('_', '-')} must be at least {minimum}, got {value}")


def headline_cell(batch_sizes: Sequence[int], seq_lens: Sequence[int], real_lengths: bool) -> dict:
    """The one cell the summary and the plot quote: batch 1 (single requests) with real lengths if measured."""
    batch_size = 1 if 1 in batch_sizes else min(batch_sizes)
    seq_len = REAL if real_lengths else max(seq_lens)
    return {"batch_size": batch_size, "seq_len": seq_len, "label": Cell(batch_size, seq_len).label,
            "statistic": "median", "timing": "model only"}


def _readable_like_a_new_directory(path: Path) -> None:
    # The staging directory comes from mkdtemp (mode 0700); a report is meant to be shared and read.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def busy_machine_warnings(threads: int, *, when: str = "started") -> list[str]:
    """Say so when the numbers cannot be quoted as they stand: other load, or more threads than cores.

    At the end, the load average includes the benchmark's own `threads` busy threads; only the rest counts.
    """
    warnings = []
    cores = physical_cores()
    if threads > cores:
        warnings.append(f"{threads} threads exceed the {cores} physical cores; threads then compete for cores "
                        f"and latency suffers, so use --threads {cores} or fewer")
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        own_load = threads if when == "ended" else 0
        if load - own_load > 0.5 * (os.cpu_count() or 1):
            warnings.append(f"the machine was busy when the benchmark {when} (1-minute load average {load:.1f} on "
                            f"{os.cpu_count()} logical cores); latency numbers are noisy, rerun on an idle machine "
                            "before quoting them")
    return warnings


def pareto_front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """Names whose (latency, accuracy) no other point beats (as fast or faster and as accurate or more, not equal)."""
    front = set()
    for name, (latency, accuracy) in points.items():
        if not any(l2 <= latency and a2 >= accuracy and (l2 < latency or a2 > accuracy)
                   for other, (l2, a2) in points.items() if other != name):
            front.add(name)
    return front


def _progress(console, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=quiet, transient=False)


def _resolve_languages(task: Task, source_lang: str, target_langs: str | Sequence[str] | None) -> tuple[str, list[str]]:
    source = normalise_lang(task, source_lang)
    if target_langs:
        targets = [normalise_lang(task, lang) for lang in parse_lang_list(target_langs)]
    else:
        targets = list(task.languages)
    return source, [lang for lang in dict.fromkeys(targets) if lang != source]


def _load_models(models: Mapping[str, str | os.PathLike], task: Task, *, device: str, threads: int,
                 max_length: int, seq_lens: Sequence[int]) -> tuple[dict[str, Runner], dict[str, np.ndarray]]:
    """Load every model before measuring anything, so that a broken one fails in seconds."""
    runners: dict[str, Runner] = {}
    mappings = {}
    for name, path in models.items():
        try:
            runners[name] = load_runner(path, device, threads, max_length=max_length)
        except KDCompressError as exc:
            raise KDCompressError(f"model {name}: {exc}") from None
        mappings[name] = acc.label_mapping(runners[name].labels, task, model_name=name)
        too_long = [L for L in seq_lens if L > runners[name].max_positions]
        if too_long:
            raise KDCompressError(f"--seq-lens {','.join(map(str, too_long))} exceed model {name}'s maximum of "
                                  f"{runners[name].max_positions} tokens; choose lengths up to that")
    return runners, mappings


def _probe_memory(runners: Mapping[str, Runner], model_info: dict[str, dict], progress, *, device: str,
                  threads: int, max_length: int, probe_batch: tuple[int, int]) -> None:
    job = progress.add_task("memory (fresh process per model)", total=len(runners))
    for name, runner in runners.items():
        model_info[name].update(memory_probe.measure_memory(
            runner.path, device=device, threads=threads, max_length=max_length,
            batch_size=probe_batch[0], seq_len=probe_batch[1]))
        model_info[name]["load_measured_in"] = "fresh process"
        progress.advance(job)


def _measure_accuracy(runners: Mapping[str, Runner], mappings: Mapping[str, np.ndarray],
                      examples: Mapping[str, list[Example]], progress, *, source: str, targets: Sequence[str],
                      baseline: str) -> dict[str, dict]:
    accuracy = {}
    for name, runner in runners.items():
        job = progress.add_task(f"accuracy {name}", total=sum(len(e) for e in examples.values()))
        per_lang = acc.evaluate(runner, mappings[name], examples, on_batch=lambda n, job=job: progress.advance(job, n))
        accuracy[name] = acc.summarize_languages(per_lang, source, targets)
    for name, delta in acc.deltas_to_baseline(accuracy, baseline).items():
        accuracy[name]["delta_vs_baseline"] = delta
    return accuracy


def _measure_latency(runners: Mapping[str, Runner], cells: Sequence[Cell], pool: Sequence[tuple[str, str | None]],
                     progress, *, baseline: str, warmup: int, repeats: int, rounds: int,
                     max_seconds_per_cell: float) -> list[dict]:
    latency = []
    job = progress.add_task("latency", total=len(cells) * rounds * len(runners))
    for cell in cells:
        progress.update(job, description=f"latency {cell.label}")
        batches = text_batches(pool, cell.batch_size)
        workloads = {name: make_workload(runner, cell, batches) for name, runner in runners.items()}
        measured = measure_cell(runners, workloads, warmup=warmup, repeats=repeats, rounds=rounds,
                                max_seconds=max_seconds_per_cell, on_round=lambda: progress.advance(job))
        base = measured[baseline]
        for name, timing in measured.items():
            latency.append({
                "model": name, "cell": cell.label, "batch_size": cell.batch_size, "seq_len": cell.seq_len, **timing,
                "speedup": base["model_only"]["median_ms"] / timing["model_only"]["median_ms"],
                "e2e_speedup": base["end_to_end"]["median_ms"] / timing["end_to_end"]["median_ms"],
            })
    return latency


def _headline(latency: Sequence[dict], accuracy: Mapping[str, dict], head: dict) -> dict[str, dict]:
    """Per model: the headline cell's latency, its accuracy, and whether it is on the Pareto front."""
    headline = {}
    for entry in latency:
        if entry["batch_size"] == head["batch_size"] and entry["seq_len"] == head["seq_len"]:
            timing, model_acc = entry["model_only"], accuracy[entry["model"]]
            headline[entry["model"]] = {
                "median_ms": timing["median_ms"], "p90_ms": timing["p90_ms"], "p99_ms": timing["p99_ms"],
                "mean_ms": timing["mean_ms"], "e2e_median_ms": entry["end_to_end"]["median_ms"],
                "throughput_per_s": timing["throughput_per_s"], "speedup": entry["speedup"],
                "target_average": model_acc["target_average"], "source": model_acc["source"],
            }
    front = pareto_front({n: (h["median_ms"], h["target_average"] or 0.0) for n, h in headline.items()})
    for name in headline:
        headline[name]["pareto"] = name in front
    return headline


def bench(
    models: Mapping[str, str | os.PathLike],
    *,
    task: str,
    source_lang: str = "en",
    target_langs: str | Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike,
    device: str = "cpu",
    baseline: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seq_lens: Sequence[int] = DEFAULT_SEQ_LENS,
    real_lengths: bool = True,
    threads: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    rounds: int = DEFAULT_ROUNDS,
    max_seconds_per_cell: float = DEFAULT_MAX_SECONDS_PER_CELL,
    max_length: int = DEFAULT_MAX_LENGTH,
    measure_memory: bool = True,
    latency_models: Sequence[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    console=None,
    command: str | None = None,
) -> dict:
    """Benchmark `models` ({name: model or ONNX directory}) on `task`; write a report to `out`.

    target_langs: comma-separated or a list; default every task language except the source.
    baseline: the model speedups and accuracy deltas are relative to; default the first.
    threads: intra-op threads for every backend; default the physical cores.
    repeats/rounds/max_seconds_per_cell: the latency budget per model and grid cell.
    latency_models: the models to time and probe for memory (default all; e.g. one seed of several
        identically shaped models); accuracy is measured for every model. Must include the baseline.
    command: the command line that asked for this run, recorded in the report so it can be rerun.
    Returns the bench.json payload.
    """
    from rich.console import Console

    console = console or report_console()
    progress_console = Console(stderr=True)

    # --- check inputs (cheap) before loading anything ---------------------------------------
    if not models:
        raise KDCompressError("no models to benchmark; pass --model NAME=PATH at least once")
    task_obj = get_task(task)
    source_lang, targets = _resolve_languages(task_obj, source_lang, target_langs)
    check_device(device)
    baseline = baseline or next(iter(models))
    if baseline not in models:
        raise KDCompressError(f"baseline {baseline!r} is not one of the models ({', '.join(models)}); "
                              "pass --baseline with one of their names")
    timed = list(models) if latency_models is None else list(dict.fromkeys(latency_models))
    unknown = [name for name in timed if name not in models]
    if unknown or baseline not in timed:
        raise KDCompressError(f"latency models must be among the models and include the baseline {baseline!r}; "
                              f"got {', '.join(timed) or 'none'}")
    batch_sizes = _positive_ints(batch_sizes, "--batch-sizes")
    seq_lens = _positive_ints(seq_lens, "--seq-lens")
    _check_counts(limit=(limit, 1), threads=(threads, 1), warmup=(warmup, 0), repeats=(repeats, 1),
                  rounds=(rounds, 1), max_length=(max_length, 8))
    if max_seconds_per_cell <= 0:
        raise KDCompressError(f"--max-seconds-per-cell must be positive, got {max_seconds_per_cell}")
    threads_source = "set by --threads" if threads else "physical cores"
    threads = threads or physical_cores()
    rounds = min(rounds, repeats)
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    langs = [source_lang, *targets]
    examples = {lang: acc.sample_examples(task_obj.load(split, lang, data_dir=data_dir), limit) for lang in langs}
    warnings = busy_machine_warnings(threads)
    probe_batch = (max(batch_sizes), max(seq_lens))

    # --- measure ---------------------------------------------------------------------------
    import torch
    from transformers.utils import logging as transformers_logging

    torch_threads_before = torch.get_num_threads()
    hf_bars_before = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # our own progress bars say what is loading
    try:
        runners, mappings = _load_models(models, task_obj, device=device, threads=threads, max_length=max_length,
                                         seq_lens=seq_lens)
        model_info = {name: {**runner.describe(), "load_seconds": runner.load_seconds,
                             "load_measured_in": "bench process"} for name, runner in runners.items()}
        with _progress(progress_console, quiet) as progress:
            timed_runners = {name: runners[name] for name in timed}
            if measure_memory:
                _probe_memory(timed_runners, model_info, progress, device=device, threads=threads,
                              max_length=max_length, probe_batch=probe_batch)
            accuracy = _measure_accuracy(runners, mappings, examples, progress, source=source_lang,
                                         targets=targets, baseline=baseline)
            pool = [(ex.text, ex.text_pair) for lang in langs for ex in examples[lang]]
            latency = _measure_latency(timed_runners, make_cells(batch_sizes, seq_lens, real_lengths), pool, progress,
                                       baseline=baseline, warmup=warmup, repeats=repeats, rounds=rounds,
                                       max_seconds_per_cell=max_seconds_per_cell)
    finally:  # the API should not leave the caller's process changed
        torch.set_num_threads(torch_threads_before)
        if hf_bars_before:
            transformers_logging.enable_progress_bar()

    # --- report ----------------------------------------------------------------------------
    head = headline_cell(batch_sizes, seq_lens, real_lengths)
    headline = _headline(latency, accuracy, head)
    if not any("busy" in warning for warning in warnings):
        warnings += [w for w in busy_machine_warnings(threads, when="ended") if "busy" in w]
    from kdcompress import __version__

    result = {
        "kdcompress_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "task": task_obj.name, "split": split, "limit": limit, "source_lang": source_lang,
            "target_langs": targets, "device": device, "baseline": baseline,
            "threads": threads, "threads_source": threads_source, "inter_op_threads": 1,
            "batch_sizes": list(batch_sizes), "seq_lens": list(seq_lens), "real_lengths": real_lengths,
            "warmup": warmup, "repeats": repeats, "rounds": rounds, "max_seconds_per_cell": max_seconds_per_cell,
            "max_length": max_length, "eval_batch_size": acc.EVAL_BATCH_SIZE,
            "measure_memory": measure_memory, "memory_probe_batch": list(probe_batch), "latency_models": timed,
            "headline": head, "data_dir": str(data_dir) if data_dir else os.environ.get("KDCOMPRESS_DATA_DIR"),
            "models": {name: str(path) for name, path in models.items()}, "out": str(out), "command": command,
        },
        "machine": machine_facts(),
        "data": {lang: {"n": len(exs), "fingerprint": fingerprint(exs)} for lang, exs in examples.items()},
        "models": model_info,
        "warnings": warnings,
        "headline": headline,
        "accuracy": accuracy,
        "latency": latency,
    }
    with atomic_output_dir(out, overwrite=overwrite) as folder:
        _readable_like_a_new_directory(folder)
        result["files"] = list(REPORT_FILES)
        write_report(result, folder)
    if not quiet:
        print_report(result, console)
    return result
