"""Intel Neural Compressor 3.x's PyTorch-path x86 int8 for benchmarks/runtimes.py (--inc).

The path INC documents for x86 CPUs without IPEX: export the model (torch.export), static int8
with the X86InductorQuantizer (PT2E), INC's accuracy-aware `autotune` over its static config set
(symmetric/asymmetric activations x min-max/KL calibration) against a tolerable loss, then
`torch.compile` (inductor, freezing on) to get int8 kernels.

Calibration: 128 English SIB-200 train sentences, as kdcompress's static int8 uses. The autotune
metric: the mean argmax agreement with the fp32 model over the dev sentences of five languages of
different scripts (en, de, sw, zh, hi) - the model runs eagerly in QDQ form while it is tuned, so a
32-language metric would take too long here. Inputs are padded to fixed shapes (batch 16 or the
timed batch, 128 tokens) so that inductor compiles a few shapes only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TUNE_LANGS = ("en", "de", "sw", "zh", "hi")
SEQ = 128


def quantize_with_inc(student: Path, data_dir: Path, threads: int, log: Callable[[str], None]) -> tuple[Callable, dict]:
    import importlib.metadata as md

    import torch
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdcompress.data.tasks import get_task

    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(student, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(student)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    wrapper = Logits().eval()

    def encode(texts: list[str]) -> tuple[Any, Any]:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    task = get_task("sib200")
    calibration = [t.text for t in task.load("train", "en", data_dir=data_dir, limit=128)]
    calib_batches = [encode(calibration[i:i + 16]) for i in range(0, len(calibration), 16)]
    dev = {lang: [e.text for e in task.load("dev", lang, data_dir=data_dir)] for lang in TUNE_LANGS}
    dev_batches = {lang: [encode(texts[i:i + 16]) for i in range(0, len(texts), 16)] for lang, texts in dev.items()}
    with torch.no_grad():
        reference = {lang: torch.cat([wrapper(*b) for b in batches]).argmax(-1) for lang, batches in dev_batches.items()}

    example = encode(["kdcompress"] * 16)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = export(wrapper, example, dynamic_shapes=({0: batch}, {0: batch}))

    def run_fn(m: Any) -> None:
        with torch.no_grad():
            for b in calib_batches:
                m(*b)

    def eval_fn(m: Any) -> float:
        with torch.no_grad():
            agreement = [float((torch.cat([m(*b) for b in batches]).argmax(-1) == reference[lang]).float().mean())
                         for lang, batches in dev_batches.items()]
        return float(np.mean(agreement))

    trials: list[float] = []

    def eval_logged(m: Any) -> float:
        score = eval_fn(m)
        trials.append(score)
        log(f"  INC autotune trial {len(trials)}: mean agreement {score:.1%}")
        return score

    tune_config = TuningConfig(config_set=[StaticQuantConfig.get_config_set_for_tuning()], tolerable_loss=0.01,
                               max_trials=3)
    quantized = autotune(exported, tune_config=tune_config, eval_fn=eval_logged, run_fn=run_fn,
                         example_inputs=example)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(quantized)
    info = {"version": md.version("neural-compressor"), "torchao": md.version("torchao"),
            "chosen": f"{len(trials)} trial(s), last mean agreement {trials[-1]:.1%}" if trials else "?",
            "trials": trials, "tune_languages": list(TUNE_LANGS), "quantize_seconds": time.perf_counter() - started}

    def run(feed: dict) -> np.ndarray:
        ids = torch.from_numpy(np.ascontiguousarray(feed["input_ids"]))
        mask = torch.from_numpy(np.ascontiguousarray(feed["attention_mask"]))
        if ids.shape[1] > SEQ:
            raise ValueError(f"inputs longer than {SEQ} tokens; the INC model is compiled for {SEQ}")
        # Fixed shapes (batch 1, 8 or 16; 128 tokens): padding rows and masked tokens leaves the logits as they
        # are, and inductor compiles three shapes instead of one per batch.
        rows = ids.shape[0]
        batch = next(b for b in (1, 8, 16, 32, 64) if b >= rows)
        pad_cols, pad_rows = SEQ - ids.shape[1], batch - rows
        ids = torch.nn.functional.pad(ids, (0, pad_cols, 0, pad_rows), value=int(tokenizer.pad_token_id))
        mask = torch.nn.functional.pad(mask, (0, pad_cols, 0, pad_rows), value=0)
        mask[rows:, 0] = 1  # padding rows: one visible token, so softmax has something to attend to
        with torch.no_grad():
            return compiled(ids, mask).float().numpy()[:rows]

    started = time.perf_counter()
    run({"input_ids": example[0][:1].numpy(), "attention_mask": example[1][:1].numpy()})
    info["compile_seconds"] = time.perf_counter() - started
    log(f"  INC int8 ready: quantized in {info['quantize_seconds']:.0f} s, compiled in {info['compile_seconds']:.0f} s")
    return run, info
