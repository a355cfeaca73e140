"""CPU latency of `kdcompress export-onnx` against Optimum's own path and PyTorch, side by side.

    bash benchmarks/setup_optimum_env.sh            # once: Optimum's own virtual environment
    .venv/bin/python benchmarks/export_vs_optimum.py --data-dir ../shared/data

For each model shape (mBERT-base: mBERT's real vocabulary and config, random weights; a
6-layer student; a 6-layer 384-wide student) and each input shape (batch 1 / sequence 128,
batch 8 / sequence 128) it times, in ONE process with the same inputs and the same thread
count, interleaving the candidates run by run so machine load hits all alike:

* PyTorch eager fp32 (transformers, `torch.inference_mode`);
* Optimum: `ORTModelForSequenceClassification(export=True)` + `ORTOptimizer` (O2) +
  `ORTQuantizer` with `AutoQuantizationConfig.avx2(is_static=False)` - what a user would run
  instead (made in benchmarks/.venv-optimum, since Optimum pins an older transformers);
* kdcompress: `export_onnx(...)` fp32 and `export_onnx(..., quantize="dynamic")` int8.

Every ONNX graph is timed with THIS environment's onnxruntime and identical SessionOptions,
whatever onnxruntime Optimum's environment has. It prints medians, p90 and ratios, checks the
two targets (our int8 <= 0.9x Optimum's median at batch 1 / 128 on every shape; our int8 file
<= 0.3x our fp32 file) and writes JSON and Markdown to --out.
"""

from __future__ import annotations

import os

# Neither engine may busy-wait between runs: with several engines interleaved on shared cores,
# libgomp's default spin-then-sleep made PyTorch 20x slower (1386 ms vs 72 ms, 6L-384, batch 1).
# ONNX Runtime gets the same policy through `session.intra_op.allow_spinning = 0` below.
# Set before torch (and its OpenMP runtime) is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OPTIMUM_VENV = ROOT / "benchmarks" / ".venv-optimum"
SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
SHAPES = {
    "mbert-base": dict(num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    "student-6L": dict(num_hidden_layers=6, hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    "student-6L-384": dict(num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12),
}
INT8_TARGET_VS_OPTIMUM = 0.9
SIZE_TARGET_VS_FP32 = 0.3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder laid out like shared/data (mBERT vocab + config under models/)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "export_vs_optimum",
                        help="where results (JSON, Markdown) and the work folder go")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {', '.join(SHAPES)}")
    parser.add_argument("--inputs", default="1x128,8x128", help="BATCHxSEQUENCE list")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads for every engine")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per candidate at batch 1 (interleaved)")
    parser.add_argument("--runs-batched", type=int, default=8, help="timed runs per candidate at batch > 1")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--optimum-venv", type=Path, default=DEFAULT_OPTIMUM_VENV)
    parser.add_argument("--with-fused", action="store_true", help="also time our int8 on the fused (--optimize) graph")
    parser.add_argument("--keep-models", action="store_true", help="keep the exported models under --out/work")
    return parser.parse_args(argv)


# --- models ------------------------------------------------------------------------------

def make_model_dir(out: Path, data_dir: Path, shape: dict, seed: int = 0) -> Path:
    """mBERT's real tokenizer and config with `shape` applied, random weights, a 7-label head."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    vocab_dir = data_dir / "models" / "bert-base-multilingual-cased"
    if not (vocab_dir / "vocab.txt").is_file():
        sys.exit(f"error: mBERT vocabulary not found under {vocab_dir}; pass --data-dir pointing to shared/data")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(vocab_dir)
    config = BertConfig.from_pretrained(vocab_dir, **shape, num_labels=len(SIB_LABELS),
                                        id2label=dict(enumerate(SIB_LABELS)),
                                        label2id={l: i for i, l in enumerate(SIB_LABELS)},
                                        architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def export_ours(model_dir: Path, work: Path, data_dir: Path, *, fused: bool) -> dict[str, Path]:
    from kdcompress import export_onnx

    # A short check (the benchmark is about speed); `kdcompress export-onnx` checks 10 languages by default.
    common = dict(task="sib200", langs="en,zh", data_dir=data_dir, check_samples=4, progress=False)
    paths = {"ours fp32": export_onnx(model_dir=model_dir, out=work / "ours_fp32", **common).model_path,
             "ours int8": export_onnx(model_dir=model_dir, out=work / "ours_int8", quantize="dynamic",
                                      **common).model_path}
    if fused:
        paths["ours int8 fused"] = export_onnx(model_dir=model_dir, out=work / "ours_int8_fused", optimize=True,
                                               quantize="dynamic", **common).model_path
    return paths


def export_optimum(model_dir: Path, work: Path, venv: Path) -> dict:
    python = venv / "bin" / "python"
    if not python.is_file():
        sys.exit(f"error: Optimum's environment is missing at {venv}; run `bash benchmarks/setup_optimum_env.sh` first")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(python), str(ROOT / "benchmarks" / "optimum_export.py"), str(model_dir),
                           str(work / "optimum")], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"error: Optimum's export failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def optimum_loads_our_output(model_dir: Path, venv: Path) -> str:
    """Load one of our output folders with Optimum's ORTModelForSequenceClassification."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "optimum_export.py"),
                           "--load", str(model_dir)], capture_output=True, text=True, env=env)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else f"FAILED: {done.stderr[-500:]}"


# --- timing ------------------------------------------------------------------------------

@dataclass
class Candidate:
    name: str
    run: callable
    times: list[float] = field(default_factory=list)


def onnx_candidate(name: str, path: Path, threads: int, feed: dict) -> Candidate:
    import onnxruntime as ort

    from kdcompress.deploy.onnx_feed import onnx_feed

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Several sessions share the cores: a session's workers must not spin after its run while the
    # next candidate runs (spinning cost PyTorch 10x here). Same setting for every graph.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = onnx_feed(session, feed)
    return Candidate(name, lambda: session.run(["logits"], inputs))


def torch_candidate(model_dir: Path, threads: int, feed: dict) -> Candidate:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    inputs = {k: torch.from_numpy(v) for k, v in feed.items()}

    def run():
        with torch.inference_mode():
            return model(**inputs).logits

    return Candidate("pytorch fp32", run)


def time_interleaved(candidates: list[Candidate], runs: int, warmup: int) -> None:
    for cand in candidates:
        for _ in range(warmup):
            cand.run()
    for r in range(runs):
        # Rotate the order each round so no candidate always runs right after a heavier one.
        for cand in candidates[r % len(candidates):] + candidates[:r % len(candidates)]:
            start = time.perf_counter()
            cand.run()
            cand.times.append(time.perf_counter() - start)


def stats(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "min_ms": round(float(ms.min()), 2), "runs": len(ms)}


def random_feed(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


# --- main --------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    import onnxruntime as ort

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from kdcompress.deploy.int8_scheme import choose_int8_scheme, detect_cpu_features

    console = Console()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        sys.exit(f"error: unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    input_shapes = [tuple(int(x) for x in item.lower().split("x")) for item in args.inputs.split(",")]
    work_root = args.out / "work"
    shutil.rmtree(work_root, ignore_errors=True)
    work_root.mkdir(parents=True)
    cpu = detect_cpu_features()
    scheme = choose_int8_scheme(cpu, "dynamic")
    meta = {"cpu": cpu.summary(), "threads": args.threads, "platform": platform.platform(),
            "onnxruntime_timing": ort.__version__, "our_int8_scheme": scheme.label, "scheme_reason": scheme.reason,
            "load_average_start": os.getloadavg()}
    console.print(f"[bold]CPU[/] {cpu.model_name} ({', '.join(k for k, v in cpu.summary()['flags'].items() if v)}); "
                  f"{args.threads} intra-op threads; every ONNX graph timed with onnxruntime {ort.__version__}")
    console.print(f"[bold]our int8[/] {scheme.label}: {scheme.reason}")
    console.print("[bold]Optimum[/] O2 + AutoQuantizationConfig.avx2(is_static=False): dynamic u8u8 per-channel")

    results, checks = [], []
    for shape_name in shapes:
        work = work_root / shape_name
        console.rule(f"[bold]{shape_name}[/] {SHAPES[shape_name]}")
        t = time.perf_counter()
        model_dir = make_model_dir(work / "model", args.data_dir, SHAPES[shape_name])
        ours = export_ours(model_dir, work, args.data_dir, fused=args.with_fused)
        console.print(f"  kdcompress exports: {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        optimum = export_optimum(model_dir, work, args.optimum_venv)
        meta["optimum_versions"] = optimum["versions"]
        console.print(f"  Optimum export + O2 + avx2 quantization: {time.perf_counter() - t:.0f} s "
                      f"(optimum {optimum['versions']['optimum']}, onnxruntime {optimum['versions']['onnxruntime']})")
        if shape_name == shapes[0]:
            meta["optimum_loads_our_int8_dir"] = optimum_loads_our_output(ours["ours int8"].parent, args.optimum_venv)
            console.print(f"  Optimum's ORTModelForSequenceClassification on our int8 folder: "
                          f"{meta['optimum_loads_our_int8_dir']}")
        sizes = {name: path.stat().st_size for name, path in ours.items()}
        sizes["optimum int8"] = Path(optimum["quantized"]).stat().st_size
        sizes["optimum fp32 (O2)"] = Path(optimum["optimized"]).stat().st_size
        size_ratio = sizes["ours int8"] / sizes["ours fp32"]
        report = json.loads((ours["ours int8"].parent / "export.json").read_text())
        checks.append({"shape": shape_name, "int8_vs_fp32_size": round(size_ratio, 4),
                       "size_ok": size_ratio <= SIZE_TARGET_VS_FP32,
                       "int8_check": {k: report["check"]["final"][k] for k in ("max_abs_logit_diff",
                                                                               "min_argmax_agreement")}})

        vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
        for batch, seq in input_shapes:
            feed = random_feed(batch, seq, vocab)
            candidates = [torch_candidate(model_dir, args.threads, feed),
                          onnx_candidate("optimum fp32 (O2)", Path(optimum["optimized"]), args.threads, feed),
                          onnx_candidate("optimum int8", Path(optimum["quantized"]), args.threads, feed),
                          *[onnx_candidate(name, path, args.threads, feed) for name, path in ours.items()]]
            runs = args.runs if batch == 1 else args.runs_batched
            with console.status(f"timing {shape_name} batch {batch} / sequence {seq} ({runs} interleaved rounds)"):
                time_interleaved(candidates, runs, args.warmup)
            by_name = {c.name: stats(c.times) for c in candidates}
            optimum_median = by_name["optimum int8"]["median_ms"]
            torch_median = by_name["pytorch fp32"]["median_ms"]
            for name, row in by_name.items():
                row.update(vs_optimum_int8=round(row["median_ms"] / optimum_median, 3),
                           vs_pytorch=round(row["median_ms"] / torch_median, 3),
                           size_mb=round(sizes[name] / 1e6, 1) if name in sizes else None)
            entry = {"shape": shape_name, "batch": batch, "sequence": seq, "candidates": by_name}
            if batch == 1:
                ratio = by_name["ours int8"]["vs_optimum_int8"]
                entry["target"] = {"ours_int8_vs_optimum_int8": ratio, "ok": ratio <= INT8_TARGET_VS_OPTIMUM}
            results.append(entry)
            print_table(console, entry)
            del candidates
            gc.collect()
        if not args.keep_models:
            shutil.rmtree(work, ignore_errors=True)

    meta["load_average_end"] = os.getloadavg()
    summary = summarize(results, checks)
    print_summary(console, summary)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": results, "size_checks": checks, "summary": summary}
    (args.out / "export_vs_optimum.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "export_vs_optimum.md").write_text(markdown(payload))
    console.print(f"wrote {args.out / 'export_vs_optimum.json'} and {args.out / 'export_vs_optimum.md'}")
    if not args.keep_models:
        shutil.rmtree(work_root, ignore_errors=True)
    return 0 if summary["all_ok"] else 1


def print_table(console, entry: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{entry['shape']} - batch {entry['batch']} / sequence {entry['sequence']}",
                  title_justify="left")
    for column in ("candidate", "median ms", "p90 ms", "vs optimum int8", "vs pytorch", "file MB"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for name, row in entry["candidates"].items():
        style = "bold green" if name == "ours int8" else None
        table.add_row(name, f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}", f"{row['vs_optimum_int8']:.2f}x",
                      f"{row['vs_pytorch']:.2f}x", "" if row["size_mb"] is None else f"{row['size_mb']:.1f}",
                      style=style)
    console.print(table)


def summarize(results: list[dict], checks: list[dict]) -> dict:
    latency = [{"shape": r["shape"], **r["target"]} for r in results if "target" in r]
    ok = all(x["ok"] for x in latency) and all(c["size_ok"] for c in checks)
    return {"latency_target": f"ours int8 <= {INT8_TARGET_VS_OPTIMUM}x optimum int8 median at batch 1",
            "size_target": f"ours int8 file <= {SIZE_TARGET_VS_FP32}x ours fp32 file",
            "latency": latency, "size": [{k: c[k] for k in ("shape", "int8_vs_fp32_size", "size_ok")} for c in checks],
            "all_ok": ok}


def print_summary(console, summary: dict) -> None:
    console.rule("[bold]targets[/]")
    for row in summary["latency"]:
        mark = "[green]PASS[/]" if row["ok"] else "[red]FAIL[/]"
        console.print(f"{mark} {row['shape']}: ours int8 = {row['ours_int8_vs_optimum_int8']:.2f}x Optimum int8 "
                      f"median at batch 1 / 128 (target <= {INT8_TARGET_VS_OPTIMUM})")
    for row in summary["size"]:
        mark = "[green]PASS[/]" if row["size_ok"] else "[red]FAIL[/]"
        console.print(f"{mark} {row['shape']}: ours int8 file = {row['int8_vs_fp32_size']:.3f}x ours fp32 file "
                      f"(target <= {SIZE_TARGET_VS_FP32})")


def markdown(payload: dict) -> str:
    meta = payload["meta"]
    lines = ["# kdcompress export-onnx vs Optimum (CPU latency)", "",
             f"- CPU: {meta['cpu']['model_name']}, flags: "
             f"{', '.join(k for k, v in meta['cpu']['flags'].items() if v)}; {meta['threads']} intra-op threads",
             f"- every ONNX graph timed with onnxruntime {meta['onnxruntime_timing']} in one process, runs interleaved",
             f"- our int8: {meta['our_int8_scheme']} ({meta['scheme_reason']})",
             f"- Optimum: {meta.get('optimum_versions', {})}, O2 + avx2 dynamic (u8u8, per-channel)",
             f"- load average start/end: {meta['load_average_start']} / {meta['load_average_end']}", ""]
    for entry in payload["results"]:
        lines += [f"## {entry['shape']} - batch {entry['batch']} / sequence {entry['sequence']}", "",
                  "| candidate | median ms | p90 ms | vs optimum int8 | vs pytorch | file MB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, row in entry["candidates"].items():
            size = "" if row["size_mb"] is None else f"{row['size_mb']:.1f}"
            lines.append(f"| {name} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['vs_optimum_int8']:.2f}x "
                         f"| {row['vs_pytorch']:.2f}x | {size} |")
        lines.append("")
    lines += ["## Targets", ""]
    for row in payload["summary"]["latency"]:
        lines.append(f"- {'PASS' if row['ok'] else 'FAIL'} {row['shape']}: ours int8 = "
                     f"{row['ours_int8_vs_optimum_int8']:.2f}x Optimum int8 at batch 1 / 128 (target <= 0.9)")
    for row in payload["summary"]["size"]:
        lines.append(f"- {'PASS' if row['size_ok'] else 'FAIL'} {row['shape']}: int8 file = "
                     f"{row['int8_vs_fp32_size']:.3f}x fp32 file (target <= 0.3)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
