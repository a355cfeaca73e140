"""The student on every CPU runtime and precision, against PyTorch fp32 mBERT-base and the peer pipelines.

    .venv/bin/python benchmarks/runtimes.py --student runs/student --data-dir ../shared/data \
        [--optimum-venv DIR] [--optimum-intel-venv DIR] [--inc] [--threads 2] [--inputs 1x128,8x128]

One process, one thread count, the same random token ids for every candidate of a shape, the
candidates interleaved run by run (order rotating each round) so that machine load hits all alike:

* pytorch fp32 mbert-base: the reference - mBERT's real config (shared/data/models), random weights;
* the student (a model directory made by `kdcompress distill`), exported by kdcompress:
  ONNX Runtime fp32, int8 dynamic, int8 static; OpenVINO fp32 (f32), bf16 (where the CPU has AMX or
  avx512_bf16), NNCF int8 (at the precision its export recorded) - each int8 under the per-language
  int8 control (`export.json` -> int8_control);
* peers, each made in its own environment and timed here: Optimum's ORT int8 (O2 + avx2 dynamic;
  benchmarks/setup_optimum_env.sh), optimum-intel's OpenVINO int8 (OVQuantizer, NNCF static;
  benchmarks/setup_optimum_intel_env.sh), and Neural Compressor 3.x's PyTorch-path x86 int8
  (static PT2E + accuracy-aware autotune, compiled with inductor; --inc).

It prints the CPU flags, the load average before and after, medians / p90 per candidate and the
ratios: PyTorch mBERT-base / candidate (speedup) and candidate / best peer. With --agreement it also
measures every student candidate's argmax agreement with ONNX Runtime fp32 on SIB-200 dev, per
language. Results: --out (JSON + Markdown).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no engine may busy-wait between interleaved runs

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
EXPORTS = {  # name -> export_onnx keywords
    "ort fp32": dict(),
    "ort int8 dynamic": dict(quantize="dynamic"),
    "ort int8 static": dict(quantize="static"),
    "ov fp32": dict(runtime="openvino"),
    "ov int8 nncf": dict(runtime="openvino", quantize="static"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, required=True, help="model directory made by kdcompress distill")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "runtimes")
    parser.add_argument("--exports", type=Path, default=None,
                        help="folder for the student's exports (reused when present; default OUT/exports)")
    parser.add_argument("--langs", default="all", help="languages the exports check and control (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", default="1x128,8x128", help="BATCHxSEQUENCE list")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds at batch 1")
    parser.add_argument("--runs-batched", type=int, default=10, help="timed rounds at batch > 1")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--optimum-venv", type=Path, default=None, help="Optimum's venv (setup_optimum_env.sh)")
    parser.add_argument("--optimum-intel-venv", type=Path, default=None,
                        help="optimum-intel's venv (setup_optimum_intel_env.sh)")
    parser.add_argument("--inc", action="store_true", help="Neural Compressor 3.x PyTorch-path int8 (in this venv)")
    parser.add_argument("--agreement", action="store_true", help="argmax agreement with ORT fp32 on SIB-200 dev")
    parser.add_argument("--max-load", type=float, default=0.5, help="wait (up to --wait-s) until the 1-minute load "
                        "average is below this before timing")
    parser.add_argument("--wait-s", type=int, default=600)
    return parser.parse_args(argv)


# --- candidates -------------------------------------------------------------------------------

@dataclass
class Candidate:
    name: str
    run: Callable[[dict], Any]  # feed -> logits
    group: str  # "reference" | "ours" | "peer"
    note: str = ""
    times: dict[str, list[float]] = field(default_factory=dict)


def cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
              "amx_tile")
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [f for f in wanted if f in flags]


def ort_run(path: Path, threads: int) -> Callable[[dict], Any]:
    import onnxruntime as ort
    from kdcompress.runtime.backends import ort_session_options

    options = ort_session_options(threads, spinning=False)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    output = session.get_outputs()[0].name
    return lambda feed: session.run([output], {n: feed[n] for n in names})[0]


def ov_run(model: Path | Any, threads: int, precision: str | None) -> Callable[[dict], Any]:
    """`model`: a model file, or an `ov.Model` already in memory."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model)) if isinstance(model, (str, Path)) else model, "CPU",
                                  config)
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]

    def run(feed):
        request.infer({n: feed[n] for n in names})
        return np.array(request.get_output_tensor(0).data)

    return run


def torch_run(model: Any, threads: int) -> Callable[[dict], Any]:
    import torch

    torch.set_num_threads(threads)
    accepted = ("input_ids", "attention_mask", "token_type_ids")

    def run(feed):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items() if k in accepted}).logits.float().numpy()

    return run


def mbert_base(work: Path, data_dir: Path) -> Path:
    from export_vs_optimum import SHAPES, make_model_dir

    return make_model_dir(work / "mbert-base", data_dir, SHAPES["mbert-base"])


def export_student(student: Path, exports: Path, data_dir: Path, langs: str, log: Callable) -> dict[str, Path]:
    from kdcompress import export_onnx

    made = {}
    for name, kwargs in EXPORTS.items():
        out = exports / name.replace(" ", "_")
        if not (out / "export.json").is_file():
            started = time.perf_counter()
            export_onnx(model_dir=str(student), out=str(out), langs=langs, data_dir=str(data_dir), progress=False,
                        **kwargs)
            log(f"  exported {name} in {time.perf_counter() - started:.0f} s -> {out}")
        made[name] = out
    return made


def control_summary(out: Path) -> dict:
    report = json.loads((out / "export.json").read_text())
    control = report.get("int8_control") or {}
    final = report["check"]["final"]
    return {"kept": control.get("kept"), "passed": control.get("passed"),
            "gate_min_agreement": control.get("min_agreement"), "gate_worst": control.get("worst_language"),
            "check_min_agreement": final["min_argmax_agreement"],
            "inference_precision": (report.get("openvino") or {}).get("inference_precision"),
            "model_mb": round(report["sizes"]["model_bytes"] / 1e6, 1)}


def _reused(path: Path) -> dict | None:
    info = path / "made.json"
    return json.loads(info.read_text()) if info.is_file() else None


def optimum_int8(student: Path, work: Path, venv: Path) -> tuple[Path, dict]:
    if made := _reused(work / "optimum"):
        return Path(made["quantized"]), made["versions"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "optimum_export.py"), str(student),
                           str(work / "optimum")], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    (work / "optimum" / "made.json").write_text(json.dumps(info))
    return Path(info["quantized"]), info["versions"]


def optimum_intel_int8(student: Path, work: Path, venv: Path, data_dir: Path) -> tuple[Path, dict]:
    if made := _reused(work / "optimum_intel"):
        return Path(made["model"]), made["versions"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "optimum_intel_export.py"),
                           str(student), str(work / "optimum_intel"), str(data_dir)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    (work / "optimum_intel" / "made.json").write_text(json.dumps(info))
    return Path(info["model"]), info["versions"]


# --- inputs -----------------------------------------------------------------------------------

def random_feed(batch: int, seq: int, vocab: int, *, bos: int, eos: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = bos, eos
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def dev_batches(onnx_dir: Path, data_dir: Path, batch_size: int = 16) -> dict[str, list[dict]]:
    """SIB-200 dev sentences per language, tokenized by the student's tokenizer, sorted into batches."""
    from kdcompress.data.tasks import get_task
    from kdcompress.runtime.predictor import Predictor

    predictor = Predictor(onnx_dir, threads=1, max_length=128)  # 128 tokens: what every candidate is timed at
    task = get_task("sib200")
    out = {}
    for lang in task.languages:
        texts = [e.text for e in task.load("dev", lang, data_dir=data_dir)]
        encodings = predictor.encoder.encode(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out[lang] = [dict(predictor.encoder.pad([encodings[i] for i in order[s:s + batch_size]]),
                          _order=order[s:s + batch_size]) for s in range(0, len(order), batch_size)]
    return out


def logits_on(run: Callable, batches: list[dict]) -> np.ndarray:
    parts, order = [], []
    for b in batches:
        parts.append(np.asarray(run({k: v for k, v in b.items() if k != "_order"}), dtype=np.float32))
        order.append(b["_order"])
    stacked, order = np.concatenate(parts), np.concatenate(order)
    out = np.empty_like(stacked)
    out[order] = stacked
    return out


# --- timing -------------------------------------------------------------------------------------

def wait_for_idle(max_load: float, wait_s: int, log: Callable) -> list[float]:
    waited = 0
    while os.getloadavg()[0] >= max_load and waited < wait_s:
        log(f"  load average {os.getloadavg()[0]:.2f} >= {max_load}: waiting 60 s (other jobs running)")
        time.sleep(60)
        waited += 60
    return list(os.getloadavg())


def time_interleaved(candidates: list[Candidate], feed: dict, key: str, runs: int, warmup: int) -> None:
    for cand in candidates:
        for _ in range(warmup):
            cand.run(feed)
        cand.times[key] = []
    gc.collect()
    gc.disable()
    try:
        for r in range(runs):
            shift = r % len(candidates)
            for cand in candidates[shift:] + candidates[:shift]:
                start = time.perf_counter()
                cand.run(feed)
                cand.times[key].append(time.perf_counter() - start)
    finally:
        gc.enable()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import onnxruntime as ort
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification

    from kdcompress.machine import cpu_facts
    from kdcompress.deploy.openvino import cpu_bf16

    def log(text: str) -> None:
        print(text, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    exports_dir = args.exports or args.out / "exports"
    flags = cpu_flags()
    bf16, bf16_reason = cpu_bf16()
    meta = {"cpu": cpu_facts()["model"],
            "flags": flags, "threads": args.threads, "onnxruntime": ort.__version__, "openvino": ov.get_version(),
            "torch": torch.__version__, "student": str(args.student.resolve()), "bf16": bf16_reason}
    log(f"CPU: {meta['cpu']}; flags: {', '.join(flags)}; {args.threads} threads")
    log(f"onnxruntime {ort.__version__}, openvino {meta['openvino']}, torch {torch.__version__}")

    # --- make everything (untimed) ---------------------------------------------------------------
    exports = export_student(args.student, exports_dir, args.data_dir, args.langs, log)
    controls = {name: control_summary(path) for name, path in exports.items()}
    mbert_dir = mbert_base(work, args.data_dir) if not (work / "mbert-base" / "config.json").is_file() \
        else work / "mbert-base"
    peers: dict[str, tuple[Callable[[], Callable], str]] = {}
    skipped: dict[str, str] = {}
    if args.optimum_venv:
        try:
            path, versions = optimum_int8(args.student, work, args.optimum_venv)
            peers["optimum ort int8"] = (lambda p=path: ort_run(p, args.threads),
                                         f"optimum {versions.get('optimum')} O2 + avx2 dynamic int8")
            meta["optimum"] = versions
        except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
            skipped["optimum ort int8"] = f"Optimum's export failed: {exc}"
    else:
        skipped["optimum ort int8"] = "no --optimum-venv given"
    if args.optimum_intel_venv:
        try:
            path, versions = optimum_intel_int8(args.student, work, args.optimum_intel_venv, args.data_dir)
            peers["optimum-intel ov int8"] = (lambda p=path: ov_run(p, args.threads, None),
                                              f"optimum-intel {versions.get('optimum-intel')} OVQuantizer int8, "
                                              "OpenVINO default precision")
            meta["optimum_intel"] = versions
        except Exception as exc:  # noqa: BLE001
            skipped["optimum-intel ov int8"] = f"optimum-intel's export failed: {exc}"
    else:
        skipped["optimum-intel ov int8"] = "no --optimum-intel-venv given"
    inc_info = None
    if args.inc:
        try:
            from inc_int8 import quantize_with_inc

            inc_model, inc_info = quantize_with_inc(args.student, args.data_dir, args.threads, log)
            peers["inc pt2e int8"] = (lambda m=inc_model: m,
                                      f"neural-compressor {inc_info['version']} PT2E static int8 "
                                      f"(autotune: {inc_info['chosen']}), torch.compile inductor")
        except Exception as exc:  # noqa: BLE001
            skipped["inc pt2e int8"] = f"Neural Compressor failed: {type(exc).__name__}: {str(exc)[:300]}"

    precisions = {name: c["inference_precision"] for name, c in controls.items()}
    ours: dict[str, tuple[Callable[[], Callable], str]] = {
        "ort fp32": (lambda: ort_run(exports["ort fp32"] / "model.onnx", args.threads), "ONNX Runtime"),
        "ort int8 dynamic": (lambda: ort_run(exports["ort int8 dynamic"] / "model.onnx", args.threads),
                             f"kept: {controls['ort int8 dynamic']['kept']}"),
        "ort int8 static": (lambda: ort_run(exports["ort int8 static"] / "model.onnx", args.threads),
                            f"kept: {controls['ort int8 static']['kept']}"),
        "ov fp32 (f32)": (lambda: ov_run(exports["ov fp32"] / "openvino_model.xml", args.threads, "f32"), "OpenVINO"),
    }
    if bf16:
        ours["ov bf16"] = (lambda: ov_run(exports["ov fp32"] / "openvino_model.xml", args.threads, "bf16"),
                           bf16_reason)
    else:
        skipped["ov bf16"] = bf16_reason
    ov8_precision = precisions["ov int8 nncf"] or "f32"
    ours[f"ov int8 nncf ({ov8_precision})"] = (
        lambda: ov_run(exports["ov int8 nncf"] / "openvino_model.xml", args.threads, ov8_precision),
        f"kept: {controls['ov int8 nncf']['kept']}")

    candidates = [Candidate("pytorch fp32 mbert-base",
                            torch_run(AutoModelForSequenceClassification.from_pretrained(mbert_dir).eval(),
                                      args.threads), "reference")]
    candidates += [Candidate(name, make(), "ours", note) for name, (make, note) in ours.items()]
    candidates += [Candidate(name, make(), "peer", note) for name, (make, note) in peers.items()]
    for name, why in skipped.items():
        log(f"  not run: {name} - {why}")

    agreement = {}
    if args.agreement:
        log("argmax agreement with ort fp32 on SIB-200 dev (32 languages)...")
        batches = dev_batches(exports["ort fp32"], args.data_dir)
        reference = {lang: logits_on(candidates[1].run, b).argmax(-1) for lang, b in batches.items()}
        for cand in candidates[2:]:
            try:
                per_lang = {lang: float((logits_on(cand.run, b).argmax(-1) == reference[lang]).mean())
                            for lang, b in batches.items()}
            except Exception as exc:  # noqa: BLE001 - recorded; the timing still runs
                agreement[cand.name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                log(f"  {cand.name}: agreement not measured ({agreement[cand.name]['error']})")
                continue
            worst = min(per_lang, key=per_lang.get)
            agreement[cand.name] = {"min": per_lang[worst], "worst_language": worst,
                                    "mean": float(np.mean(list(per_lang.values()))), "per_language": per_lang}
            log(f"  {cand.name}: min {per_lang[worst]:.1%} ({worst}), mean {agreement[cand.name]['mean']:.1%}")

    # --- time ------------------------------------------------------------------------------------
    student_config = json.loads((args.student / "config.json").read_text())
    mbert_vocab = json.loads((mbert_dir / "config.json").read_text())["vocab_size"]
    meta["load_before"] = wait_for_idle(args.max_load, args.wait_s, log)
    log(f"load average before timing: {meta['load_before']}")
    results = []
    for item in args.inputs.split(","):
        batch, seq = (int(x) for x in item.lower().split("x"))
        key = f"{batch}x{seq}"
        student_feed = random_feed(batch, seq, int(student_config["vocab_size"]), bos=0, eos=2)
        mbert_feed = random_feed(batch, seq, int(mbert_vocab), bos=101, eos=102)
        runs = args.runs if batch == 1 else args.runs_batched
        # PyTorch mBERT-base gets its own feed (its vocabulary); every student candidate the same one.
        reference = candidates[0]
        original = reference.run
        reference.run = lambda _feed, f=mbert_feed, run=original: run(f)
        log(f"timing batch {batch} x {seq}: {runs} interleaved rounds of {len(candidates)} candidates...")
        time_interleaved(candidates, student_feed, key, runs, args.warmup)
        reference.run = original
        medians = {c.name: float(np.median(c.times[key])) * 1e3 for c in candidates}
        peer_best = min((medians[c.name] for c in candidates if c.group == "peer"), default=None)
        rows = []
        for cand in candidates:
            ms = np.asarray(cand.times[key]) * 1e3
            rows.append({"candidate": cand.name, "group": cand.group, "note": cand.note,
                         "median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
                         "speedup_vs_pytorch_mbert": round(medians[reference.name] / medians[cand.name], 2),
                         "vs_best_peer": round(medians[cand.name] / peer_best, 3) if peer_best else None})
        results.append({"input": key, "rows": rows})
        print_rows(key, rows, log)
    meta["load_after"] = list(os.getloadavg())
    log(f"load average after timing: {meta['load_after']}")
    payload = {"meta": meta, "controls": controls, "results": results, "skipped": skipped, "agreement": agreement,
               "inc": inc_info}
    (args.out / "runtimes.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "runtimes.md").write_text(markdown(payload))
    log(f"wrote {args.out / 'runtimes.json'} and {args.out / 'runtimes.md'}")
    return 0


def print_rows(key: str, rows: list[dict], log: Callable) -> None:
    log(f"\n{'candidate':34s} {'median ms':>10s} {'p90 ms':>8s} {'vs mBERT':>9s} {'vs best peer':>12s}")
    for r in rows:
        peer = "" if r["vs_best_peer"] is None else f"{r['vs_best_peer']:.2f}x"
        log(f"{r['candidate']:34s} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} {r['speedup_vs_pytorch_mbert']:8.1f}x "
            f"{peer:>12s}")
    log("")


def markdown(payload: dict) -> str:
    meta = payload["meta"]
    lines = [f"- CPU: {meta['cpu']}; flags: {', '.join(meta['flags'])}; {meta['threads']} threads",
             f"- onnxruntime {meta['onnxruntime']}, openvino {meta['openvino']}, torch {meta['torch']}",
             f"- load average before / after timing: {[round(x, 2) for x in meta['load_before']]} / "
             f"{[round(x, 2) for x in meta['load_after']]}", ""]
    for entry in payload["results"]:
        lines += [f"**batch {entry['input'].replace('x', ' x ')}**", "",
                  "| candidate | median ms | p90 ms | speedup vs PyTorch fp32 mBERT-base | vs best peer |",
                  "|---|---:|---:|---:|---:|"]
        for r in entry["rows"]:
            peer = "" if r["vs_best_peer"] is None else f"{r['vs_best_peer']:.2f}x"
            lines.append(f"| {r['candidate']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                         f"{r['speedup_vs_pytorch_mbert']:.1f}x | {peer} |")
        lines.append("")
    if payload["agreement"]:
        lines += ["| candidate | min agreement with ORT fp32 (32 languages, SIB-200 dev) | worst | mean |",
                  "|---|---:|---|---:|"]
        for name, a in payload["agreement"].items():
            lines.append(f"| {name} | not measured: {a['error']} | | |" if "error" in a else
                         f"| {name} | {a['min']:.1%} | {a['worst_language']} | {a['mean']:.1%} |")
        lines.append("")
    for name, why in payload["skipped"].items():
        lines.append(f"- not run: {name} - {why}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
