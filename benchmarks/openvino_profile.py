"""Where OpenVINO's time goes on this CPU: exported OpenVINO directories at each inference precision, with
dynamic shapes (what the predictor compiles) and with the input shape fixed at compile time, side by side,
then the operator types that take the time in the fastest of them (OpenVINO's own per-node counters).

    .venv/bin/python benchmarks/openvino_profile.py DIR [DIR ...] [--threads 2] [--input 1x128] [--rounds 40]

DIR: a directory made by `kdcompress export-onnx --runtime openvino` (fp32 or int8). One process, the same
random token ids for every candidate, candidates interleaved with the order rotating each round.
Results: --out (JSON + Markdown).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runtimes import Candidate, cpu_flags, time_interleaved  # noqa: E402 - the sibling benchmark's timer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="OpenVINO directories made by kdcompress export-onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input", default="1x128", help="BATCHxSEQUENCE")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "openvino_profile")
    return parser.parse_args(argv)


def compile_candidate(path: Path, precision: str, shape: tuple[int, int] | None, threads: int,
                      profile: bool = False) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path / "openvino_model.xml"))
    if shape:
        model.reshape({port.get_any_name(): list(shape) for port in model.inputs})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
              "PERF_COUNT": profile}
    return core.compile_model(model, "CPU", config)


def infer(compiled: Any) -> Callable[[dict], Any]:
    """One inference request of `compiled`, fed the graph's own inputs from a shared feed."""
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    return lambda feed: request.infer({n: feed[n] for n in names})


def main(argv=None) -> int:
    args = parse_args(argv)
    from kdcompress.deploy.openvino import cpu_bf16

    batch, length = (int(x) for x in args.input.split("x"))
    precisions = ["f32"] + (["bf16"] if cpu_bf16()[0] else [])
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(5, 1000, (batch, length)), "attention_mask": np.ones((batch, length), np.int64),
            "token_type_ids": np.zeros((batch, length), np.int64)}
    candidates: list[Candidate] = []
    settings: dict[str, tuple[Path, str, tuple[int, int] | None]] = {}
    for directory in args.dirs:
        report = json.loads((directory / "export.json").read_text(encoding="utf-8"))
        kind = report.get("precision", "?") + (f" ({report['int8_control']['kept']})" if report.get("int8_control")
                                               else "")
        for precision in precisions:
            for shape in (None, (batch, length)):
                name = f"{directory.name} [{kind}], {precision}, {'static' if shape else 'dynamic'} shape"
                candidates.append(Candidate(name, infer(compile_candidate(directory, precision, shape, args.threads)),
                                            group="ours"))
                settings[name] = (directory, precision, shape)
    load_before = os.getloadavg()[0]
    time_interleaved(candidates, feed, args.input, args.rounds, args.warmup)
    load_after = os.getloadavg()[0]
    rows = [{"candidate": c.name, "median_ms": float(np.median(c.times[args.input]) * 1e3),
             "p90_ms": float(np.percentile(c.times[args.input], 90) * 1e3)} for c in candidates]
    rows.sort(key=lambda row: row["median_ms"])

    directory, precision, shape = settings[rows[0]["candidate"]]
    compiled = compile_candidate(directory, precision, shape, args.threads, profile=True)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    by_type: collections.Counter = collections.Counter()
    for _ in range(args.rounds):
        request.infer({n: feed[n] for n in names})
        for node in request.profiling_info:
            by_type[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds() * 1e3 / args.rounds
    total = sum(by_type.values())
    profile = [{"operator": op, "ms": round(ms, 3), "share": round(ms / total, 4)} for op, ms in by_type.most_common(8)]

    import openvino as ov

    lines = [f"# OpenVINO: where the time goes ({args.input}, {args.threads} threads)", "",
             f"- CPU flags: {', '.join(cpu_flags())}; openvino {ov.get_version()}",
             f"- load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}", "",
             "| candidate | median ms | p90 ms | vs fastest |", "|---|---:|---:|---:|"]
    lines += [f"| {r['candidate']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['median_ms'] / rows[0]['median_ms']:.2f}x |" for r in rows]
    lines += ["", f"Operator types in the fastest ({rows[0]['candidate']}), OpenVINO's per-node counters:", "",
              "| operator (kernel) | ms | share |", "|---|---:|---:|"]
    lines += [f"| {p['operator']} | {p['ms']:.3f} | {p['share']:.1%} |" for p in profile]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvino_profile.md").write_text(markdown, encoding="utf-8")
    (args.out / "openvino_profile.json").write_text(json.dumps(
        {"input": args.input, "threads": args.threads, "cpu_flags": cpu_flags(), "rows": rows, "profile": profile,
         "load_average": [load_before, load_after]}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
