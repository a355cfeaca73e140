"""Which CPU runtime serves a student fastest on this machine: ONNX Runtime or OpenVINO, fp32, int8 or bf16,
with the last layer whole or on [CLS] only. Random weights of a real shape, so it needs no data and no
hub: run it on the machine you will serve from.

    .venv/bin/python benchmarks/cpu_runtime_choice.py [--threads 2] [--inputs 1x128,8x128] [--out DIR]

One process, the same random token ids for every candidate of a shape, candidates interleaved run by run
(runtimes.py's timer). Candidates, each exported by kdcompress's own code (deploy/export.py's wrapper or
deploy/cls_only.py, deploy/quantize.py with the int8 scheme chosen for this CPU):

* PyTorch fp32 mBERT-base (12 x 768, 119,547-token vocabulary): the reference every ratio is against;
* the student (default: `make demo`'s, 6 x 384 with multilingual-e5's 250,037-token vocabulary) on ONNX
  Runtime fp32 and dynamic int8, and on OpenVINO f32, bf16 (where the CPU has it), int8 weights (NNCF
  weight compression) and full int8 (NNCF static, calibrated on random tokens: its latency only), each
  with the whole last layer and [CLS] only.

To measure an AVX2-only CPU on a newer one, run it under `benchmarks/avx2_only/run` (CPUID masked).

Prints the CPU flags, medians / p90, the speedup over the reference and the fastest candidate per
runtime; writes --out/cpu_runtime_choice.{json,md}. Accuracy is not measured here (random weights):
`kdcompress bench --runtime all` measures real exports on real data.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no engine may busy-wait between interleaved runs

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from runtimes import Candidate, cpu_flags, ort_run, ov_run, random_feed, time_interleaved, torch_run  # noqa: E402

MBERT_BASE = dict(num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                  vocab_size=119547)  # bert-base-multilingual-cased's config.json
DEMO_STUDENT = dict(num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12,
                    vocab_size=250037)  # make demo's student of multilingual-e5-small
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "cpu_runtime_choice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", default="1x128,8x128", help="BATCHxSEQUENCE list")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds at batch 1")
    parser.add_argument("--runs-batched", type=int, default=10, help="timed rounds at batch > 1")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--layers", type=int, default=DEMO_STUDENT["num_hidden_layers"])
    parser.add_argument("--hidden", type=int, default=DEMO_STUDENT["hidden_size"])
    parser.add_argument("--vocab", type=int, default=DEMO_STUDENT["vocab_size"])
    return parser.parse_args(argv)


def classifier(shape: dict, *, attention: str, seed: int = 0):
    """Random weights of `shape`; `attention`: eager for export (the graph `kdcompress export-onnx` writes),
    PyTorch's default (sdpa) for the reference."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**shape, num_labels=7, attn_implementation=attention)).eval()


def export(model: Any, path: Path, *, cls_only: bool) -> Path:
    """The fp32 graph as `kdcompress export-onnx` writes it (same wrapper, exporter and opset)."""
    import torch

    from kdcompress.deploy.cls_only import cls_only_module
    from kdcompress.deploy.config import DEFAULT_OPSET
    from kdcompress.deploy.traced import logits_module
    from kdcompress.quiet import quiet_block

    wrapper = cls_only_module(model, INPUT_NAMES) if cls_only else logits_module(model, INPUT_NAMES)
    ids = torch.randint(5, 1000, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in INPUT_NAMES}
    with quiet_block(), torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask, torch.zeros_like(ids)), str(path), dynamo=False,
                          input_names=INPUT_NAMES, output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch_size"}},
                          opset_version=DEFAULT_OPSET, do_constant_folding=True)
    return path


def ort_int8(fp32: Path, dst: Path) -> tuple[Path, str]:
    from kdcompress.deploy.int8_scheme import QuantizationSpec, detect_cpu_features
    from kdcompress.deploy.quantize import quantize_dynamic_int8

    spec = QuantizationSpec.for_cpu(detect_cpu_features(), "dynamic")
    quantize_dynamic_int8(fp32, dst, spec)
    return dst, spec.scheme.label


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    try:
        import openvino as ov
    except ImportError:
        ov = None
    try:
        import nncf  # noqa: F401
    except ImportError:
        nncf = None
    import torch

    def log(text: str) -> None:
        print(text, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    from kdcompress.machine import cpu_facts
    from kdcompress.deploy.openvino import cpu_bf16

    flags = cpu_flags()
    model_name = cpu_facts()["model"]
    bf16, bf16_reason = cpu_bf16() if ov else (False, "openvino is not installed")
    meta = {"cpu": model_name, "flags": flags, "threads": args.threads, "onnxruntime": ort.__version__,
            "openvino": ov.get_version() if ov else None, "nncf": getattr(nncf, "__version__", None),
            "torch": torch.__version__, "bf16": bf16_reason,
            "student": dict(DEMO_STUDENT, num_hidden_layers=args.layers, hidden_size=args.hidden,
                            intermediate_size=4 * args.hidden, vocab_size=args.vocab)}
    log(f"CPU: {model_name}; flags: {', '.join(flags) or 'none of the vector extensions looked for'}; "
        f"{args.threads} threads")
    log(f"onnxruntime {ort.__version__}, openvino {meta['openvino']}, nncf {meta['nncf']}, torch {torch.__version__}")

    # --- make everything (untimed) ---------------------------------------------------------------
    started = time.perf_counter()
    reference = classifier(MBERT_BASE, attention="sdpa")
    student = classifier(meta["student"], attention="eager")
    candidates = [Candidate("pytorch fp32 mbert-base", torch_run(reference, args.threads), "reference")]
    skipped: dict[str, str] = {}
    for graph in ("full", "cls-only"):
        fp32 = export(student, work / f"student_{graph}.onnx", cls_only=graph == "cls-only")
        int8, scheme = ort_int8(fp32, work / f"student_{graph}_int8.onnx")
        candidates += [Candidate(f"ort fp32 {graph}", ort_run(fp32, args.threads), "ours"),
                       Candidate(f"ort int8 dynamic {graph}", ort_run(int8, args.threads), "ours", note=scheme)]
        if ov is None:
            skipped["openvino"] = "openvino is not installed"
            continue
        candidates.append(Candidate(f"ov f32 {graph}", ov_run(fp32, args.threads, "f32"), "ours"))
        if bf16:
            candidates.append(Candidate(f"ov bf16 {graph}", ov_run(fp32, args.threads, "bf16"), "ours"))
        else:
            skipped["ov bf16"] = bf16_reason
        if nncf is None:
            skipped["ov int8 weights, ov int8 nncf"] = "nncf is not installed"
        else:
            from kdcompress.deploy.openvino import compress_int8_weights, quantize_int8

            weights = work / f"student_{graph}_int8_weights.xml"
            ov.save_model(compress_int8_weights(ov.Core().read_model(str(fp32))), str(weights), compress_to_fp16=False)
            precision = "bf16" if bf16 else "f32"
            candidates.append(Candidate(f"ov int8 weights {graph}", ov_run(weights, args.threads, precision),
                                        "ours", note=f"activations {precision}"))
            # Full int8 as `--runtime openvino --quantize static` makes it (its ladder's first rung). Random
            # tokens calibrate it: the ranges are wrong for real text, the kernels and so the latency are not.
            full = work / f"student_{graph}_int8_nncf.xml"
            calibration = [random_feed(1, 128, args.vocab, bos=0, eos=2, seed=seed) for seed in range(16)]
            ov.save_model(quantize_int8(ov.Core().read_model(str(fp32)), calibration), str(full), compress_to_fp16=False)
            candidates.append(Candidate(f"ov int8 nncf {graph}", ov_run(full, args.threads, precision), "ours",
                                        note=f"NNCF static int8, random calibration (latency only); rest {precision}"))
    log(f"built {len(candidates)} candidates in {time.perf_counter() - started:.0f} s")

    # --- time ---------------------------------------------------------------------------------------
    results = []
    load_before = list(os.getloadavg())
    for spec in args.inputs.split(","):
        batch, seq = (int(x) for x in spec.lower().split("x"))
        feed = random_feed(batch, seq, min(args.vocab, MBERT_BASE["vocab_size"]), bos=0, eos=2)  # valid for both
        runs = args.runs if batch == 1 else args.runs_batched
        time_interleaved(candidates, feed, spec, runs, args.warmup)
        ref_ms = float(np.median(candidates[0].times[spec])) * 1e3
        rows = []
        for cand in candidates:
            ms = np.asarray(cand.times[spec]) * 1e3
            rows.append({"candidate": cand.name, "note": cand.note, "median_ms": float(np.median(ms)),
                         "p90_ms": float(np.percentile(ms, 90)), "speedup_vs_pytorch_mbert": ref_ms / float(np.median(ms))})
        fastest = {rt: min((r for r in rows if r["candidate"].startswith(rt)), key=lambda r: r["median_ms"])
                   for rt in ("ort", "ov") if any(r["candidate"].startswith(rt) for r in rows)}
        results.append({"input": spec, "rows": rows, "fastest": {rt: r["candidate"] for rt, r in fastest.items()}})
        log(f"\nbatch {batch} x {seq}:\n{'candidate':30s} {'median ms':>10s} {'p90 ms':>8s} {'vs mBERT':>9s}")
        for r in rows:
            log(f"{r['candidate']:30s} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} {r['speedup_vs_pytorch_mbert']:8.1f}x")
        best = min(fastest.values(), key=lambda r: r["median_ms"])
        log(f"fastest: {best['candidate']} ({best['median_ms']:.2f} ms)" +
            (f"; fastest ONNX Runtime / fastest OpenVINO: {fastest['ort']['median_ms'] / fastest['ov']['median_ms']:.2f}x"
             if len(fastest) == 2 else ""))
    meta["load_before"], meta["load_after"] = load_before, list(os.getloadavg())
    payload = {"meta": meta, "results": results, "skipped": skipped}
    (args.out / "cpu_runtime_choice.json").write_text(json.dumps(payload, indent=2))
    (args.out / "cpu_runtime_choice.md").write_text(markdown(payload))
    log(f"\nwrote {args.out / 'cpu_runtime_choice.md'}")
    return 0


def markdown(payload: dict) -> str:
    meta = payload["meta"]
    lines = [f"- CPU: {meta['cpu']}; flags: {', '.join(meta['flags'])}; {meta['threads']} threads",
             f"- onnxruntime {meta['onnxruntime']}, openvino {meta['openvino']}, nncf {meta['nncf']}, "
             f"torch {meta['torch']}",
             f"- load average before / after timing: {[round(x, 2) for x in meta['load_before']]} / "
             f"{[round(x, 2) for x in meta['load_after']]}", ""]
    for entry in payload["results"]:
        lines += [f"**batch {entry['input'].replace('x', ' x ')}** (fastest: {', '.join(entry['fastest'].values())})",
                  "", "| candidate | median ms | p90 ms | speedup vs PyTorch fp32 mBERT-base |", "|---|---:|---:|---:|"]
        lines += [f"| {r['candidate']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['speedup_vs_pytorch_mbert']:.1f}x |"
                  for r in entry["rows"]]
        lines.append("")
    lines += [f"- not run: {name} - {why}" for name, why in payload["skipped"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
