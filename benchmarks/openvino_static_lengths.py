"""Single sentences on OpenVINO: the dynamic-shape model against batch-1 static lengths, side by side.

    .venv/bin/python benchmarks/openvino_static_lengths.py DIR [--task sib200] [--data-dir ../shared/data]
        [--threads 2] [--sentences 64] [--rounds 6] [--lengths 16,32,48,64 --lengths 32,64]

DIR: a directory made by `kdcompress export-onnx --runtime openvino`. Each candidate is kdcompress's own
OpenVinoBackend (what `predict`, `Predictor` and `bench` run) with a different set of static lengths; every
candidate gets the same shuffled sentences of every language of the task's test split, one at a time, in the
same order, interleaved round by round. Reported: median and mean ms per sentence, the ratio to the dynamic model,
and the anonymous memory each candidate added when it loaded (compiled kernels and buffers; the weights file is
mapped once). Results: --out (JSON + Markdown).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runtimes import cpu_flags  # noqa: E402 - the sibling benchmark's CPU flags


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="an OpenVINO directory made by kdcompress export-onnx")
    parser.add_argument("--task", default="sib200")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KDCOMPRESS_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--lengths", action="append", default=None,
                        help="a comma-separated set of static lengths; repeat for more candidates "
                             "(default: 16,32,48,64 and 32,64)")
    parser.add_argument("--max-length", type=int, default=64, help="truncation, as the model was trained")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "openvino_static_lengths")
    return parser.parse_args(argv)


def anonymous_mb() -> float:
    text = Path("/proc/self/smaps_rollup").read_text()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) / 1024


def sentences(task_name: str, data_dir: Path, count: int) -> list[str]:
    from kdcompress.data.tasks import get_task

    task = get_task(task_name)
    pool = [ex.text for lang in task.languages for ex in task.load("test", lang, data_dir=data_dir)]
    order = np.random.default_rng(0).permutation(len(pool))[:count]
    return [pool[i] for i in order]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from kdcompress.runtime.backends import OpenVinoBackend, recorded_precision

    lengths = [tuple(int(n) for n in spec.split(",")) for spec in (args.lengths or ["16,32,48,64", "32,64"])]
    tokenizer = AutoTokenizer.from_pretrained(args.dir)
    precision = recorded_precision(args.dir, ("f32", "bf16")) or "f32"
    texts = sentences(args.task, args.data_dir, args.sentences)
    candidates, added = {}, {}
    for spec in [()] + lengths:
        name = "dynamic" if not spec else "static " + ",".join(map(str, spec))
        before = anonymous_mb()
        candidates[name] = OpenVinoBackend(args.dir / "openvino_model.xml", threads=args.threads, precision=precision,
                                           static_lengths=spec)
        added[name] = anonymous_mb() - before
    names = candidates[next(iter(candidates))].input_names
    feeds = [{k: v.astype(np.int64) for k, v in tokenizer(t, truncation=True, max_length=args.max_length,
                                                          return_tensors="np").items() if k in names} for t in texts]
    for backend in candidates.values():  # warm-up: every shape once
        for feed in feeds:
            backend.run(feed)
    times = {name: [] for name in candidates}
    gc.collect()
    gc.disable()
    try:
        for round_index in range(args.rounds):
            order = list(candidates)
            order = order[round_index % len(order):] + order[:round_index % len(order)]
            for name in order:
                for feed in feeds:
                    start = time.perf_counter()
                    candidates[name].run(feed)
                    times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    base = float(np.median(times["dynamic"]))
    rows = [{"candidate": name, "median_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t)),
             "vs_dynamic": base / float(np.median(t)), "added_anonymous_mb": added[name]} for name, t in times.items()]
    payload = {"dir": str(args.dir), "precision": precision, "threads": args.threads, "cpu_flags": cpu_flags(),
               "sentences": len(feeds), "mean_tokens": float(np.mean([f["input_ids"].shape[1] for f in feeds])),
               "rounds": args.rounds, "load_average": list(os.getloadavg()), "rows": rows}
    lines = [f"# OpenVINO static lengths: {args.dir}", "",
             f"{len(feeds)} {args.task} test sentences one at a time (mean {payload['mean_tokens']:.1f} tokens), "
             f"{args.rounds} interleaved rounds, {args.threads} threads, precision {precision}; CPU flags "
             f"{' '.join(payload['cpu_flags'])}; load average {payload['load_average'][0]:.2f}.", "",
             "| candidate | median ms | mean ms | speed-up vs dynamic | anonymous MB at load |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['candidate']} | {r['median_ms']:.2f} | {r['mean_ms']:.2f} | {r['vs_dynamic']:.2f}x | "
              f"{r['added_anonymous_mb']:.0f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
