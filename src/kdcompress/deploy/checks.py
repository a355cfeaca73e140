"""Checks of an exported graph against the PyTorch model, per language: logits parity, argmax agreement
and (for `--accuracy-goal`) dev accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kdcompress.data.tasks import Example
from kdcompress.deploy.model_dir import SourceModel
from kdcompress.errors import KDCompressError

FP32_TOLERANCE = 1e-4
CHECK_MAX_LENGTH = 256
Batch = dict[str, np.ndarray]  # tokenizer outputs plus "_order", each row's index in the language's examples


@dataclass
class CheckSet:
    """Real sentences per language (or synthetic ids when no data is available)."""

    source: str
    batches: dict[str, list[Batch]]
    labels: dict[str, np.ndarray] | None = None

    @property
    def languages(self) -> list[str]:
        return list(self.batches)

    @classmethod
    def from_examples(cls, source: SourceModel, examples: dict[str, list[Example]], *, batch_size: int,
                      described: str, with_labels: bool = False) -> "CheckSet":
        labels = {l: np.asarray([e.label for e in ex]) for l, ex in examples.items()} if with_labels else None
        return cls(described, {l: _batches(source, ex, batch_size) for l, ex in examples.items()}, labels)

    @classmethod
    def synthetic(cls, source: SourceModel, n: int, *, why: str) -> "CheckSet":
        return cls(f"synthetic token ids (no sentences: {why})", {"synthetic": _synthetic_batches(source, n)})


def _batches(source: SourceModel, examples: Sequence[Example], batch_size: int) -> list[Batch]:
    # Similar lengths together: less padding, and each batch has its own sequence length.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].text_pair or ""))
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        encoded = source.encode(chunk, max_length=CHECK_MAX_LENGTH)
        encoded["_order"] = np.asarray(order[start:start + batch_size])
        out.append(encoded)
    return out


def _synthetic_batches(source: SourceModel, n: int, seed: int = 0) -> list[Batch]:
    """Random token ids in three batch/length shapes, every other row right-padded."""
    rng = np.random.default_rng(seed)
    vocab = int(getattr(source.config, "vocab_size", 1000))
    low = min(1000, vocab // 2)
    special = list(getattr(source.tokenizer, "all_special_ids", []) or [])
    out, offset = [], 0
    for batch, length in ((min(n, 8), 24), (min(n, 8), 61), (max(1, n - 16), 9)):
        ids = rng.integers(low, vocab, size=(batch, length))
        ids[np.isin(ids, special)] = low
        mask = np.ones_like(ids)
        mask[1::2, length // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
                    "_order": np.arange(offset, offset + batch)})
        offset += batch
    return out


def feeds(source: SourceModel, examples: Sequence[Example], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Graph inputs for `examples` in batches, in their own order (calibration data)."""
    out = []
    for start in range(0, len(examples), batch_size):
        encoded = source.encode(examples[start:start + batch_size], max_length=CHECK_MAX_LENGTH)
        out.append({n: np.asarray(encoded[n], dtype=np.int64) for n in source.input_names})
    return out


def torch_logits(source: SourceModel, batches: Sequence[Batch]) -> np.ndarray:
    import torch

    outs = []
    threads = torch.get_num_threads()
    if sum(p.numel() for p in source.model.parameters()) < 30_000_000:
        # Small models: handing each tiny op to a second thread costs more than the maths, badly
        # so on a busy machine (15 ms per op measured with 2 threads vs well under 1 ms with 1).
        torch.set_num_threads(1)
    with torch.no_grad():
        for encoded in batches:
            inputs = {n: torch.from_numpy(np.asarray(encoded[n], dtype=np.int64)) for n in source.input_names}
            outs.append(source.model(**inputs).logits.float().numpy())
    torch.set_num_threads(threads)
    return _restore_order(batches, outs)


def _restore_order(batches: Sequence[Batch], outs: Sequence[np.ndarray]) -> np.ndarray:
    order = np.concatenate([b["_order"] for b in batches])
    stacked = np.concatenate(outs)
    if sorted(order.tolist()) != list(range(len(stacked))):
        raise AssertionError("check batches must cover each example exactly once")
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


def session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(onnx_session: Any, batches: Sequence[Batch]) -> np.ndarray:
    from kdcompress.deploy.onnx_feed import onnx_feed

    outs = [onnx_session.run(["logits"], onnx_feed(onnx_session, {k: v for k, v in b.items() if k != "_order"}))[0]
            for b in batches]
    return _restore_order(batches, outs)


def run_logits(run: Callable[[dict[str, np.ndarray]], np.ndarray], batches: Sequence[Batch]) -> np.ndarray:
    """Logits from any runtime (`run(feed) -> logits`) on check batches, in the examples' order."""
    return _restore_order(batches, [run({k: v for k, v in b.items() if k != "_order"}) for b in batches])


def compare_logits(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict:
    per_lang = {}
    for lang, ref in reference.items():
        cand = candidate[lang]
        per_lang[lang] = {"max_abs_logit_diff": float(np.abs(ref - cand).max()),
                          "argmax_agreement": float((ref.argmax(-1) == cand.argmax(-1)).mean()),
                          "n": int(len(ref))}
    return {"max_abs_logit_diff": max(v["max_abs_logit_diff"] for v in per_lang.values()),
            "min_argmax_agreement": min(v["argmax_agreement"] for v in per_lang.values()),
            "per_language": per_lang}


class Parity:
    """The PyTorch logits on a check set, computed once, and every ONNX graph compared with them."""

    def __init__(self, source: SourceModel, check: CheckSet):
        self.check = check
        self.reference = {lang: torch_logits(source, b) for lang, b in check.batches.items()}

    def compare(self, path: Path) -> dict:
        onnx_session = session(path)
        return compare_logits(self.reference, {l: onnx_logits(onnx_session, b) for l, b in self.check.batches.items()})

    def compare_run(self, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> dict:
        """The same comparison for a model on another runtime (OpenVINO): `run(feed) -> logits`."""
        return compare_logits(self.reference, {l: run_logits(run, b) for l, b in self.check.batches.items()})


def accuracy(path: Path, check: CheckSet, label_map: np.ndarray) -> dict[str, float]:
    """Dev accuracy per language of the ONNX model at `path` (`label_map`: model class -> task label)."""
    onnx_session = session(path)
    result = {}
    for lang, batches in check.batches.items():
        predictions = label_map[onnx_logits(onnx_session, batches).argmax(-1)]
        result[lang] = round(float((predictions == check.labels[lang]).mean()), 6)
    return result


def brief(check: dict) -> dict:
    return {"max_abs_logit_diff": check["max_abs_logit_diff"], "min_argmax_agreement": check["min_argmax_agreement"]}


def require_fp32_parity(check: dict, what: str) -> None:
    if check["max_abs_logit_diff"] > FP32_TOLERANCE:
        raise KDCompressError(f"the {what} differs from PyTorch by {check['max_abs_logit_diff']:.2e} in the logits "
                              f"(> {FP32_TOLERANCE:g}); nothing was written - please report this model")
