"""`run_bench`: latency and per-language accuracy of several models on one task, in one report.

Order of work: check every input (cheap) before loading anything, load every model (so that a
broken one fails in seconds, not after an hour of timing), probe memory in fresh processes,
measure accuracy, then latency with models interleaved, and finally write the report atomically.
Every setting is a field of `BenchConfig` (bench/config.py), which checks types and ranges itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kdcompress.bench import accuracy as acc
from kdcompress.bench import memory as memory_probe
from kdcompress.bench import same_computation
from kdcompress.bench.accuracy_cache import AccuracyCache
from kdcompress.bench.config import BenchConfig
from kdcompress.bench.model_specs import expand_runtimes
from kdcompress.bench.latency import REAL, Cell, make_cells, make_workload, measure_cell, text_batches
from kdcompress.machine import machine_facts, physical_cores
from kdcompress.bench.report import REPORT_FILES, print_report, write_report
from kdcompress.bench.runners import Runner, load_runner
from kdcompress.data.tasks import Example, Task, fingerprint, get_task, resolve_languages
from kdcompress.errors import KDCompressError
from kdcompress.io import atomic_output_dir, check_writable_output
from kdcompress.quiet import quiet_block
from kdcompress.runtime.registry import ModelSpec
from kdcompress.settings import build


@dataclass(frozen=True)
class BenchResult:
    """What `run_bench` made: the report folder, the bench.json payload and the settings as resolved."""

    out: Path
    payload: dict[str, Any]
    config: BenchConfig


def headline_cell(batch_sizes: Sequence[int], seq_lens: Sequence[int], real_lengths: bool) -> dict:
    """The one cell the summary and the plot quote: batch 1 (single requests) with real lengths if measured."""
    batch_size = 1 if 1 in batch_sizes else min(batch_sizes)
    seq_len = REAL if real_lengths else max(seq_lens)
    return {"batch_size": batch_size, "seq_len": seq_len, "label": Cell(batch_size, seq_len).label,
            "statistic": "median", "timing": "model only"}


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


def bench_progress(console, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from kdcompress.progress import Progress

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=quiet, transient=False)


def _resolve(cfg: BenchConfig, task: Task) -> BenchConfig:
    """The settings as run: languages in the task's codes, baseline, timed models, threads, grid without repeats.

    Also the rules that need the model list, which a `[bench]` table alone does not have.
    """
    models = cfg.models
    if not models:
        raise KDCompressError("no models to benchmark; pass --model NAME=PATH at least once")
    if not cfg.out:
        raise KDCompressError("no report folder given; pass --out with the folder to create")
    source, targets = resolve_languages(task, cfg.source_lang, cfg.target_langs)
    baseline = cfg.baseline or next(iter(models))
    if baseline not in models:
        raise KDCompressError(f"baseline {baseline!r} is not one of the models ({', '.join(models)}); "
                              "pass --baseline with one of their names")
    timed = list(models) if cfg.latency_models is None else list(dict.fromkeys(cfg.latency_models))
    unknown = [name for name in timed if name not in models]
    if unknown or baseline not in timed:
        raise KDCompressError(f"latency models must be among the models and include the baseline {baseline!r}; "
                              f"got {', '.join(timed) or 'none'}")
    scored = list(models) if cfg.accuracy_models is None else list(dict.fromkeys(cfg.accuracy_models))
    if any(name not in models for name in scored) or baseline not in scored:
        raise KDCompressError(f"accuracy models must be among the models and include the baseline {baseline!r}; "
                              f"got {', '.join(scored) or 'none'}")
    if set(models) - set(timed) - set(scored):
        raise KDCompressError(f"models {', '.join(sorted(set(models) - set(timed) - set(scored)))} are neither "
                              "timed nor scored; drop them or add them to latency_models or accuracy_models")
    return dataclasses.replace(
        cfg, source_lang=source, target_langs=targets, baseline=baseline, latency_models=timed, accuracy_models=scored,
        threads=cfg.threads or physical_cores(), rounds=min(cfg.rounds, cfg.repeats),
        batch_sizes=list(dict.fromkeys(cfg.batch_sizes)), seq_lens=list(dict.fromkeys(cfg.seq_lens)))


THROUGHPUT_BATCH = 32
THROUGHPUT_ROUNDS = 2


def _measure_throughput(runners: Mapping[str, Runner], model_info: dict[str, dict],
                        examples: Mapping[str, list[Example]], progress, plan: BenchConfig) -> None:
    """Exported models as `kdcompress predict` serves them: every example at batch 32, end to end (tokenize and
    run), batches bucketed by length vs in arrival order; rounds interleaved across models and orders."""
    from kdcompress.bench.runners import PredictorRunner

    served = {name: runner for name, runner in runners.items() if isinstance(runner, PredictorRunner)}
    if not served:
        return
    texts = [ex.text for lang_examples in examples.values() for ex in lang_examples]
    pairs = [ex.text_pair for lang_examples in examples.values() for ex in lang_examples]
    pairs = pairs if any(p is not None for p in pairs) else None
    seconds = {(name, bucketed): [] for name in served for bucketed in (True, False)}
    job = progress.add_task(f"throughput (batch {THROUGHPUT_BATCH}, bucketed vs arrival)",
                            total=THROUGHPUT_ROUNDS * len(served) * 2)
    names = list(served)
    for name in names:  # warm-up: first calls allocate
        served[name].predictor.logits(texts[:THROUGHPUT_BATCH], pairs[:THROUGHPUT_BATCH] if pairs else None)
    for round_index in range(THROUGHPUT_ROUNDS):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            predictor = served[name].predictor
            saved = (predictor.batch_size, predictor.sort_by_length)
            for bucketed in ((True, False) if round_index % 2 == 0 else (False, True)):
                predictor.batch_size, predictor.sort_by_length = THROUGHPUT_BATCH, bucketed
                started = time.perf_counter()
                predictor.logits(texts, pairs)
                seconds[(name, bucketed)].append(time.perf_counter() - started)
                progress.advance(job)
            predictor.batch_size, predictor.sort_by_length = saved
    for name in names:
        bucketed = len(texts) / float(np.median(seconds[(name, True)]))
        arrival = len(texts) / float(np.median(seconds[(name, False)]))
        model_info[name]["throughput"] = {
            "rows": len(texts), "batch_size": THROUGHPUT_BATCH, "rounds": THROUGHPUT_ROUNDS,
            "bucketed_rows_per_s": bucketed, "arrival_rows_per_s": arrival,
            "bucketed_vs_arrival": bucketed / arrival, "statistic": "median over rounds, end to end"}


def _probe_batch(plan: BenchConfig) -> tuple[int, int]:
    return max(plan.batch_sizes), max(plan.seq_lens)


def _check_model_folders(models: Mapping[str, str]) -> None:
    """Cheap checks of every model folder, before any data or model loads: what it is (PyTorch or ONNX), a
    tokenizer that fits its vocabulary (without one every word would be [UNK]) and, for PyTorch, complete weights."""
    from kdcompress.bench.runners import detect_runtime, read_config
    from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable

    for name, path in models.items():
        folder = Path(path).expanduser()
        try:
            own = detect_runtime(folder)
            vocab_size = read_config(folder).get("vocab_size")
        except KDCompressError as exc:
            raise KDCompressError(f"model {name}: {exc}") from None
        if not own.exported:
            check_weights_readable(folder, what=f"model {name}")
        with quiet_block():
            check_model_dir_tokenizer(folder, vocab_size if isinstance(vocab_size, int) else None,
                                      what=f"model {name}")


def _load_models(plan: BenchConfig, specs: Mapping[str, ModelSpec],
                 task: Task) -> tuple[dict[str, Runner], dict[str, np.ndarray]]:
    """Load every model before measuring anything, so that a broken one fails in seconds."""
    runners: dict[str, Runner] = {}
    mappings = {}
    for name, spec in specs.items():
        try:
            runners[name] = load_runner(spec.path, plan.device, plan.threads, max_length=plan.max_length,
                                        runtime=spec.runtime)
        except KDCompressError as exc:
            raise KDCompressError(f"model {name}: {exc}") from None
        mappings[name] = acc.label_mapping(runners[name].labels, task, model_name=name)
        too_long = [L for L in plan.seq_lens if L > runners[name].max_positions]
        if too_long:
            raise KDCompressError(f"--seq-lens {','.join(map(str, too_long))} exceed model {name}'s maximum of "
                                  f"{runners[name].max_positions} tokens; choose lengths up to that")
    return runners, mappings


def _probe_memory(runners: Mapping[str, Runner], model_info: dict[str, dict], progress, plan: BenchConfig) -> None:
    batch_size, seq_len = _probe_batch(plan)
    job = progress.add_task("memory (fresh process per model)", total=len(runners))
    for name, runner in runners.items():
        model_info[name].update(memory_probe.measure_memory(
            runner.path, device=plan.device, threads=plan.threads, max_length=plan.max_length,
            batch_size=batch_size, seq_len=seq_len, runtime=getattr(runner, "runtime", None)))
        model_info[name]["load_measured_in"] = "fresh process"
        progress.advance(job)


def _measure_accuracy(runners: Mapping[str, Runner], mappings: Mapping[str, np.ndarray],
                      examples: Mapping[str, list[Example]], progress, plan: BenchConfig) -> dict[str, dict]:
    accuracy = {}
    cache = AccuracyCache(plan.accuracy_cache) if plan.accuracy_cache else None
    for name, runner in ((name, runners[name]) for name in plan.accuracy_models):
        job = progress.add_task(f"accuracy {name}", total=sum(len(e) for e in examples.values()))
        per_lang = acc.evaluate(runner, mappings[name], examples, on_batch=lambda n, job=job: progress.advance(job, n),
                                batch_size=plan.eval_batch_size, sentence_hits=plan.sentence_hits, cache=cache)
        accuracy[name] = acc.summarize_languages(per_lang, plan.source_lang, plan.target_langs)
    for name, delta in acc.deltas_to_baseline(accuracy, plan.baseline).items():
        accuracy[name]["delta_vs_baseline"] = delta
    return accuracy


def _measure_latency(runners: Mapping[str, Runner], pool: Sequence[tuple[str, str | None]], progress,
                     plan: BenchConfig) -> list[dict]:
    cells = make_cells(plan.batch_sizes, plan.seq_lens, plan.real_lengths)
    latency = []
    job = progress.add_task("latency", total=len(cells) * plan.rounds * len(runners))
    for cell in cells:
        progress.update(job, description=f"latency {cell.label}")
        batches = text_batches(pool, cell.batch_size)
        workloads = {name: make_workload(runner, cell, batches) for name, runner in runners.items()}
        measured = measure_cell(runners, workloads, warmup=plan.warmup, repeats=plan.repeats, rounds=plan.rounds,
                                max_seconds=plan.max_seconds_per_cell, on_round=lambda: progress.advance(job))
        base = measured[plan.baseline]
        for name, timing in measured.items():
            latency.append({
                "model": name, "cell": cell.label, "batch_size": cell.batch_size, "seq_len": cell.seq_len, **timing,
                "speedup": base["model_only"]["median_ms"] / timing["model_only"]["median_ms"],
                "e2e_speedup": base["end_to_end"]["median_ms"] / timing["end_to_end"]["median_ms"],
            })
    return latency


def _headline(latency: Sequence[dict], accuracy: Mapping[str, dict], head: dict,
              models: Mapping[str, dict]) -> dict[str, dict]:
    """Per model: the headline cell's latency, its accuracy, and whether it is on the Pareto front (where models
    run the same computation, they share their median latency: the most accurate of them is on it, not the one
    that noise made fastest)."""
    headline = {}
    for entry in latency:
        if entry["batch_size"] == head["batch_size"] and entry["seq_len"] == head["seq_len"]:
            timing = entry["model_only"]
            model_acc = accuracy.get(entry["model"], {"target_average": None, "source": None})  # timed only
            headline[entry["model"]] = {
                "median_ms": timing["median_ms"], "p90_ms": timing["p90_ms"], "p99_ms": timing["p99_ms"],
                "mean_ms": timing["mean_ms"], "e2e_median_ms": entry["end_to_end"]["median_ms"],
                "throughput_per_s": timing["throughput_per_s"], "speedup": entry["speedup"],
                "target_average": model_acc["target_average"], "source": model_acc["source"],
            }
    scored = {n: h["median_ms"] for n, h in headline.items() if h["target_average"] is not None}
    ranked = same_computation.shared_latency(scored, models)
    front = pareto_front({n: (ranked[n], headline[n]["target_average"]) for n in scored})
    for name in headline:
        headline[name]["pareto"] = name in front
    return headline


def _measure(plan: BenchConfig, specs: Mapping[str, ModelSpec], task: Task, examples: Mapping[str, list[Example]],
             progress_console) -> tuple[dict, dict, list[dict]]:
    """Load every model, then memory, accuracy and latency: (model facts, accuracy, latency)."""
    import torch

    torch_threads_before = torch.get_num_threads()
    try:
        with quiet_block():  # our own progress bars say what is loading
            runners, mappings = _load_models(plan, specs, task)
            model_info = {name: {**runner.describe(), "load_seconds": runner.load_seconds,
                                 "load_measured_in": "bench process"} for name, runner in runners.items()}
            with bench_progress(progress_console, plan.quiet) as progress:
                timed_runners = {name: runners[name] for name in plan.latency_models}
                if plan.memory:
                    _probe_memory(timed_runners, model_info, progress, plan)
                accuracy = _measure_accuracy(runners, mappings, examples, progress, plan)
                pool = [(ex.text, ex.text_pair) for lang_examples in examples.values() for ex in lang_examples]
                latency = _measure_latency(timed_runners, pool, progress, plan)
                if plan.throughput:
                    _measure_throughput(timed_runners, model_info, examples, progress, plan)
    finally:  # the API should not leave the caller's process changed (quiet_block restores its own)
        torch.set_num_threads(torch_threads_before)
    return model_info, accuracy, latency


def _settings_record(plan: BenchConfig, task: Task, threads_source: str) -> dict:
    """bench.json's "settings": what was run, in the task's own names, so that it can be rerun."""
    return {
        "task": task.name, "split": plan.split, "limit": plan.limit, "source_lang": plan.source_lang,
        "target_langs": plan.target_langs, "device": plan.device, "baseline": plan.baseline,
        "threads": plan.threads, "threads_source": threads_source, "inter_op_threads": 1,
        "batch_sizes": plan.batch_sizes, "seq_lens": plan.seq_lens, "real_lengths": plan.real_lengths,
        "warmup": plan.warmup, "repeats": plan.repeats, "rounds": plan.rounds,
        "max_seconds_per_cell": plan.max_seconds_per_cell, "max_length": plan.max_length,
        "eval_batch_size": plan.eval_batch_size, "accuracy_cache": plan.accuracy_cache, "measure_memory": plan.memory,
        "memory_probe_batch": list(_probe_batch(plan)), "latency_models": plan.latency_models,
        "accuracy_models": plan.accuracy_models,
        "headline": headline_cell(plan.batch_sizes, plan.seq_lens, plan.real_lengths),
        "data_dir": plan.data_dir if plan.data_dir else os.environ.get("KDCOMPRESS_DATA_DIR"),
        "models": dict(plan.models), "out": plan.out, "command": plan.command,
    }


def run_bench(config: BenchConfig | None = None, *, console=None, **overrides: Any) -> BenchResult:
    """Benchmark `models` ({name: model or ONNX directory}) on `task`; write a report to `out`.

    Settings are `BenchConfig`'s fields (see its help): pass a config, keyword overrides, or both
    (overrides win). `latency_models` must include the baseline; every model gets accuracy.
    `console`: where the closing table goes (default: stdout). Returns the folder and bench.json's payload.
    """
    from kdcompress.console import report_console, stderr_console

    cfg = build(BenchConfig, config, overrides)
    console = console or report_console()

    # --- check inputs (cheap) before loading anything ---------------------------------------
    task = get_task(cfg.task)
    plan = _resolve(cfg, task)
    out = check_writable_output(plan.out, plan.overwrite, inputs=list(plan.models.values()))
    _check_model_folders(plan.models)
    plan, specs, runtime_notes = expand_runtimes(plan)
    langs = [plan.source_lang, *plan.target_langs]
    examples = {lang: acc.sample_examples(task.load(plan.split, lang, data_dir=plan.data_dir), plan.limit)
                for lang in langs}
    warnings = busy_machine_warnings(plan.threads) + runtime_notes

    # --- measure ---------------------------------------------------------------------------
    model_info, accuracy, latency = _measure(plan, specs, task, examples, stderr_console())

    # --- report ----------------------------------------------------------------------------
    settings = _settings_record(plan, task, "set by --threads" if cfg.threads else "physical cores")
    headline = _headline(latency, accuracy, settings["headline"], model_info)
    if not any("busy" in warning for warning in warnings):
        warnings += [w for w in busy_machine_warnings(plan.threads, when="ended") if "busy" in w]
    from kdcompress import __version__

    payload = {
        "kdcompress_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": machine_facts(),
        "data": {lang: {"n": len(exs), "fingerprint": fingerprint(exs)} for lang, exs in examples.items()},
        "models": model_info,
        "warnings": warnings,
        "headline": headline,
        "accuracy": accuracy,
        "latency": latency,
    }
    with atomic_output_dir(out, overwrite=plan.overwrite) as folder:
        payload["files"] = list(REPORT_FILES)
        write_report(payload, folder)
    if not plan.quiet:
        print_report(payload, console)
    return BenchResult(out=out, payload=payload, config=plan)
