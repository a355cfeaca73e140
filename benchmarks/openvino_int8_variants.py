"""Which of NNCF's int8 knobs keeps every language through the int8 control, and what each costs in latency.

    .venv/bin/kdcompress export-onnx runs/sib200_teacher_6L --out runs/t6-fp32 --quantize none
    .venv/bin/python benchmarks/openvino_int8_variants.py runs/t6-fp32 --data-dir ../shared/data \
        [--threads 2] [--out runs/openvino_int8_variants]

DIR: an fp32 export (`kdcompress export-onnx --quantize none`) of a SIB-200 classifier. Each variant is NNCF's
post-training int8 of its ONNX graph as `--runtime openvino --quantize static` makes it (transformer model
type, CPU target), changed in one knob: the calibration text (the source language's train sentences, or a few
from every language's), SmoothQuant's alpha, full bias correction, or which matrix multiplies stay unquantized
(named by the export's node names). Every variant is judged by kdcompress's own int8 control (deploy/
int8_control.py: >= 97% argmax agreement with fp32 on each language's dev sentences, or dev accuracy within
1 point) at the precision the exported model would run at (bf16 where the CPU has it), then all are timed
against fp32 weights and int8 weights only, interleaved, at batch 1 x 128. Results: --out (JSON + Markdown).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from runtimes import Candidate, cpu_flags, dev_batches, logits_on, ov_run, random_feed, time_interleaved  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32_dir", type=Path, help="an fp32 export: kdcompress export-onnx MODEL --quantize none")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--source-lang", default="en")
    parser.add_argument("--source-calibration", type=int, default=300, help="source-language train sentences")
    parser.add_argument("--per-language-calibration", type=int, default=8, help="train sentences of each language")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "openvino_int8_variants")
    return parser.parse_args(argv)


def matmul_groups(model: Any) -> dict[str, list[str]]:
    """The export's matrix multiplies by role, from its node names (/model/bert/encoder/layer.N/... and the
    [CLS]-only last layer's /model/last_layer/...)."""
    names = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    ffn_output = [n for n in names if "/attention/" not in n and ("/output/dense/MatMul" in n or "/output/dense_1/" in n)
                  and "/last_layer/output/dense/" not in n]  # last_layer/output/dense is its attention output
    ffn_input = [n for n in names if "/intermediate/" in n]
    attention_scores = [n for n in names if n.endswith(("/self/MatMul", "/self/MatMul_1", "/last_layer/MatMul",
                                                        "/last_layer/MatMul_1"))]
    return {"ffn_output": ffn_output, "ffn_input": ffn_input, "attention_scores": attention_scores,
            "attention_projections": [n for n in names if n not in set(ffn_output + ffn_input + attention_scores)
                                      and "/pooler/" not in n and "/classifier/" not in n]}


def calibration_feeds(encoder: Any, inputs: list[str], data_dir: Path, langs: list[str], per_lang: int) -> list[dict]:
    """One sentence per feed, only the graph's inputs: nncf.Dataset hands them to the model as they are."""
    from kdcompress.data.tasks import get_task

    task = get_task("sib200")
    texts = [e.text for lang in langs for e in task.load("train", lang, data_dir=data_dir, limit=per_lang)]
    return [{name: encoded[name] for name in inputs} for encoded in (encoder([text]) for text in texts)]


def gate_data(fp32_dir: Path, data_dir: Path, reference: dict[str, np.ndarray]) -> Any:
    from kdcompress.data.tasks import get_task
    from kdcompress.deploy.int8_control import GateData

    task = get_task("sib200")
    id2label = json.loads((fp32_dir / "config.json").read_text())["id2label"]
    label_map = np.array([task.labels.index(id2label[str(i)]) for i in range(len(id2label))])
    labels = {lang: np.array([e.label for e in task.load("dev", lang, data_dir=data_dir)]) for lang in reference}
    return GateData(reference=reference, labels=labels, label_map=label_map, source="sib200 dev")


def main(argv=None) -> int:
    args = parse_args(argv)
    import nncf
    import openvino as ov

    from kdcompress.machine import cpu_facts
    from kdcompress.data.tasks import get_task
    from kdcompress.deploy.int8_control import judge
    from kdcompress.deploy.openvino import compress_int8_weights, cpu_bf16, quantize_int8
    from kdcompress.runtime.predictor import Predictor

    def log(text: str) -> None:
        print(text, flush=True)

    bf16, _ = cpu_bf16()
    precision = "bf16" if bf16 else "f32"
    fp32 = ov.Core().read_model(str(args.fp32_dir / "model.onnx"))
    groups = matmul_groups(fp32)
    languages = list(get_task("sib200").languages)
    encoder = Predictor(args.fp32_dir, threads=1, max_length=128).encoder
    inputs = [port.get_any_name() for port in fp32.inputs]
    source = calibration_feeds(encoder, inputs, args.data_dir, [args.source_lang], args.source_calibration)
    everyone = calibration_feeds(encoder, inputs, args.data_dir, languages, args.per_language_calibration)
    advanced, smooth = nncf.AdvancedQuantizationParameters, nncf.AdvancedSmoothQuantParameters

    def nncf_int8(**knobs: Any) -> Any:  # quantize_int8's call, with a knob it does not expose
        return nncf.quantize(fp32, nncf.Dataset(everyone), model_type=nncf.ModelType.TRANSFORMER,
                             target_device=nncf.TargetDevice.CPU, subset_size=len(everyone), **knobs)

    variants: dict[str, tuple[str, Callable[[], Any]]] = {
        "default": (f"{len(source)} {args.source_lang} train sentences", lambda: quantize_int8(fp32, source)),
        "every_language": (f"{len(everyone)} train sentences, {args.per_language_calibration} per language",
                           lambda: quantize_int8(fp32, everyone)),
        "no_smooth_quant": ("every language's calibration, SmoothQuant off", lambda: nncf_int8(
            advanced_parameters=advanced(smooth_quant_alphas=smooth(matmul=-1)))),
        "smooth_quant_0.5": ("every language's calibration, SmoothQuant alpha 0.5 (NNCF's default 0.95)",
                             lambda: nncf_int8(advanced_parameters=advanced(smooth_quant_alphas=smooth(matmul=0.5)))),
        "full_bias_correction": ("every language's calibration, bias correction instead of the fast one",
                                 lambda: nncf_int8(fast_bias_correction=False)),
        "ffn_output_unquantized": ("every language's calibration, the feed-forward output MatMuls unquantized",
                                   lambda: quantize_int8(fp32, everyone, ignored_names=groups["ffn_output"])),
        "ffn_input_only": ("every language's calibration, only the feed-forward input MatMuls int8",
                           lambda: quantize_int8(fp32, everyone, ignored_names=[
                               n for role, names in groups.items() if role != "ffn_input" for n in names])),
        "attention_scores_unquantized": ("every language's calibration, QK^T and attention x V unquantized",
                                         lambda: quantize_int8(fp32, everyone, ignored_names=groups["attention_scores"])),
    }

    batches = dev_batches(args.fp32_dir, args.data_dir)

    def dev_logits(model: Any, at: str) -> dict[str, np.ndarray]:
        run = ov_run(model, args.threads, at)
        return {lang: logits_on(run, b) for lang, b in batches.items()}

    gate = gate_data(args.fp32_dir, args.data_dir, dev_logits(fp32, "f32"))
    log(f"CPU: {cpu_facts()['model']}; flags: {', '.join(cpu_flags())}; judged at {precision}; {args.threads} threads")
    models: dict[str, Any] = {"fp32 weights": fp32, "int8 weights only": compress_int8_weights(fp32)}
    rows = []
    for name, (what, make) in [("fp32 weights", ("the fp32 export at the inference precision", lambda: fp32)),
                               ("int8 weights only", ("NNCF weight compression", lambda: models["int8 weights only"])),
                               *variants.items()]:
        started = time.perf_counter()
        models[name] = make()
        verdict = judge(gate, dev_logits(models[name], precision))
        rows.append({"variant": name, "what": what, "passed": verdict["passed"], "failing": verdict["failing"],
                     "min_agreement": verdict["min_agreement"], "worst_language": verdict["worst_language"],
                     "under_97": sorted(lang for lang, row in verdict["per_language"].items() if row["agreement"] < 0.97),
                     "seconds": round(time.perf_counter() - started, 1)})
        r = rows[-1]
        control = "pass" if r["passed"] else f"{len(r['failing'])} fail"
        log(f"{name:30s} {control:8s} worst {r['worst_language']} {r['min_agreement']:.1%}, "
            f"{len(r['under_97'])} under 97% agreement ({r['seconds']} s)")

    candidates = [Candidate(name, ov_run(model, args.threads, precision), "ours") for name, model in models.items()]
    vocab = json.loads((args.fp32_dir / "config.json").read_text())["vocab_size"]
    time_interleaved(candidates, random_feed(1, 128, vocab, bos=0, eos=2), "1x128", args.runs, 3)
    base = float(np.median(candidates[0].times["1x128"]))
    for row, cand in zip(rows, candidates):
        row["median_ms"] = float(np.median(cand.times["1x128"])) * 1e3
        row["vs_fp32_weights"] = float(np.median(cand.times["1x128"])) / base
    payload = {"meta": {"cpu": cpu_facts()["model"], "flags": cpu_flags(), "precision": precision,
                        "threads": args.threads, "openvino": ov.get_version(), "nncf": nncf.__version__,
                        "fp32_dir": str(args.fp32_dir)}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvino_int8_variants.json").write_text(json.dumps(payload, indent=2))
    (args.out / "openvino_int8_variants.md").write_text(markdown(payload))
    log("\n" + markdown(payload))
    return 0


def markdown(payload: dict) -> str:
    meta = payload["meta"]
    lines = [f"- CPU: {meta['cpu']}; flags: {', '.join(meta['flags'])}; {meta['threads']} threads; judged and timed "
             f"at {meta['precision']}; OpenVINO {meta['openvino']}, NNCF {meta['nncf']}", "",
             "| variant | what | control | worst agreement | languages under 97% agreement | b1 x 128 ms | vs fp32 weights |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in payload["rows"]:
        control = "pass" if r["passed"] else f"{len(r['failing'])} fail ({', '.join(r['failing'])})"
        lines.append(f"| {r['variant']} | {r['what']} | {control} | {r['worst_language']} {r['min_agreement']:.1%} | "
                     f"{len(r['under_97'])} | {r['median_ms']:.2f} | {r['vs_fp32_weights']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
