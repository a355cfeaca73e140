"""Peak memory, load time and cold start of one model, measured in a fresh process of its own.

Why a subprocess: a process's peak RSS only grows, so measuring several models in the
benchmark process would charge each one with everything loaded before it. A short-lived
`python -m kdcompress.bench.memory` loads one model, runs the largest grid batch once (the
activations count too) and reports its own peak.

An exported directory is probed as it is served: the process imports only the predictor
(`kdcompress.runtime`: onnxruntime or openvino, tokenizers, numpy - no torch, no transformers),
and cold start is the wall time from the parent starting the process to the first prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kdcompress.errors import KDCompressError

PROBE_TIMEOUT_S = 600
PROBE_TEXT = "kdcompress measures the memory a model needs while it serves a batch of sentences."


def _peak_rss_bytes() -> int:
    """This process's peak RSS since it started.

    On Linux, read VmHWM: getrusage's ru_maxrss survives exec, so a probe started from a benchmark
    process that already holds several models would report the parent's size instead of its own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, others KiB


def _memory_fields(*, baseline: int, after_load: int, peak: int, load_seconds: float, first_prediction_at: float,
                   spawned_at: float | None, probe_batch: list[int]) -> dict:
    """What every probe reports: load time, cold start and the memory it took, in MB."""
    return {
        "load_seconds": load_seconds,
        "cold_start_seconds": (first_prediction_at - spawned_at) if spawned_at else None,
        "peak_rss_mb": peak / 2**20,
        "rss_after_imports_mb": baseline / 2**20,
        "rss_after_load_mb": after_load / 2**20,
        "model_rss_mb": (peak - baseline) / 2**20,
        "probe_batch": probe_batch,
    }


def probe_exported(path: str, threads: int, max_length: int | None, batch_size: int, seq_len: int,
                   runtime: str | None, spawned_at: float | None) -> dict:
    """Runs inside the fresh process for an exported directory: only the predictor is imported."""
    import psutil

    process = psutil.Process()
    baseline = process.memory_info().rss  # the interpreter, psutil and numpy
    started = time.perf_counter()
    from kdcompress.runtime.predictor import Predictor

    import_seconds = time.perf_counter() - started
    predictor = Predictor(path, threads=threads, runtime=runtime or "auto", max_length=max_length, spinning=False)
    load_seconds = time.perf_counter() - started - import_seconds
    after_load = process.memory_info().rss
    predictor.predict([PROBE_TEXT])
    first_prediction_at = time.time()
    first_seconds = time.perf_counter() - started - import_seconds - load_seconds
    # The largest grid batch at its fixed length, as the PyTorch probe runs it.
    encoder = predictor.encoder
    length = min(seq_len, encoder.max_length)
    rows = encoder.encode([" ".join([PROBE_TEXT] * 20)] * batch_size)
    for row in rows:
        row.truncate(length)
    predictor.backend.run(predictor._feed(encoder.pad(rows, width=max(len(r.ids) for r in rows))))
    peak = max(_peak_rss_bytes(), process.memory_info().rss)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "nncf"})
    return {
        **_memory_fields(baseline=baseline, after_load=after_load, peak=peak, load_seconds=load_seconds,
                         first_prediction_at=first_prediction_at, spawned_at=spawned_at,
                         probe_batch=[batch_size, length]),
        "import_seconds": import_seconds,
        "first_prediction_seconds": first_seconds,
        "probe_imports": "kdcompress.runtime.Predictor only",
        "heavy_modules_loaded": heavy,
        "runtime": predictor.runtime,
    }


def probe(path: str, device: str, threads: int, max_length: int | None, batch_size: int, seq_len: int,
          runtime: str | None = None, spawned_at: float | None = None) -> dict:
    """Runs inside the fresh process: import, load, one forward pass, then report."""
    from kdcompress.runtime.registry import exported_runtimes

    if device == "cpu" and (Path(path) / "config.json").is_file() and \
            any(row.owns(Path(path)) for row in exported_runtimes()):
        return probe_exported(path, threads, max_length, batch_size, seq_len, runtime, spawned_at)
    import psutil

    # The libraries every backend pays for are loaded before the baseline is taken (transformers'
    # tokenizers import torch even for ONNX models), so `model_rss_mb` is what the model itself adds,
    # with ONNX Runtime's own library counted against ONNX models.
    import torch  # noqa: F401
    from transformers import AutoTokenizer  # noqa: F401

    from kdcompress.bench.runners import load_runner

    process = psutil.Process()
    baseline = process.memory_info().rss
    started = time.perf_counter()
    runner = load_runner(path, device, threads, max_length=max_length)
    load_seconds = time.perf_counter() - started
    after_load = process.memory_info().rss
    runner.logits([PROBE_TEXT], pad_to=None)
    first_prediction_at = time.time()
    runner.logits([PROBE_TEXT] * batch_size, pad_to=min(seq_len, runner.max_positions))
    peak = max(_peak_rss_bytes(), process.memory_info().rss)
    result = _memory_fields(baseline=baseline, after_load=after_load, peak=peak, load_seconds=load_seconds,
                            first_prediction_at=first_prediction_at, spawned_at=spawned_at,
                            probe_batch=[batch_size, min(seq_len, runner.max_positions)])
    if device == "cuda" and runner.format == "pytorch":
        import torch

        result["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def measure_memory(path: Path, *, device: str, threads: int, max_length: int | None, batch_size: int,
                   seq_len: int, runtime: str | None = None) -> dict:
    """Run `probe` in a fresh interpreter and return its report (exported directories: on `runtime`)."""
    import kdcompress

    env = dict(os.environ)
    package_root = str(Path(kdcompress.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "kdcompress.bench.memory", str(path), "--device", device,
               "--threads", str(threads), "--max-length", str(max_length or 0), "--batch-size", str(batch_size),
               "--seq-len", str(seq_len)]
    if runtime:
        command += ["--runtime", runtime]
    command += ["--spawned-at", repr(time.time())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KDCompressError(f"measuring the memory of {path} took over {PROBE_TIMEOUT_S} s; "
                              "rerun with --no-memory to skip it") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KDCompressError(f"the memory probe for {path} failed ({last}); rerun with --no-memory to skip it")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Internal: peak memory of one model in a fresh process.")
    parser.add_argument("path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=0, help="0: the length the model was trained at")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runtime", default=None)
    parser.add_argument("--spawned-at", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        report = probe(args.path, args.device, args.threads, args.max_length or None, args.batch_size, args.seq_len,
                       args.runtime, args.spawned_at)
    except KDCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
