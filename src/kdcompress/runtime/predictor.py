"""`Predictor`: labels and probabilities from an exported directory, without torch or transformers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from kdcompress.errors import KDCompressError
from kdcompress.runtime.model_fit import check_model_fits
from kdcompress.runtime.backends import open_backend, pick_model_file
from kdcompress.runtime.encoding import Encoder, labels_from_config, read_json_file


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # the probability of `label`
    probabilities: dict[str, float]

    def to_json(self) -> dict:
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities}


def _check_texts(texts: Sequence[str], text_pairs: Sequence[str | None] | None) -> None:
    if isinstance(texts, str) or (text_pairs is not None and isinstance(text_pairs, str)):
        raise KDCompressError("predict takes a list of texts; wrap a single text in a list")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise KDCompressError(f"predict got {len(texts)} texts but {len(text_pairs)} text_pairs; pass one pair "
                              "(or None) per text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise KDCompressError(f"text {i} is a {type(text).__name__}, not a string; pass strings")
    for i, pair in enumerate(text_pairs or ()):
        if pair is not None and not isinstance(pair, str):
            raise KDCompressError(f"text_pair {i} is a {type(pair).__name__}, not a string or None")


class Predictor:
    """Run an exported directory (`kdcompress export-onnx`) on ONNX Runtime or OpenVINO.

    runtime: "auto" (model.onnx -> onnxruntime, openvino_model.xml -> openvino), or a runtime of the registry
    (runtime/registry.py; openvino reads model.onnx too). threads: the runtime's intra-op threads (None: its
    default). Texts are sorted by token length into batches of `batch_size` (set `sort_by_length`
    False to batch in arrival order); results come back in input order. `precision` is OpenVINO's
    inference precision, f32 or bf16 (default: what the export recorded, else f32). `cache_dir`: a folder
    where OpenVINO keeps the compiled model, so that later processes skip compiling it (cold start);
    ONNX Runtime ignores it. `spinning=False` stops idle threads busy-waiting (what bench times with).
    """

    def __init__(self, model_dir: str | os.PathLike, *, threads: int | None = None, runtime: str = "auto",
                 batch_size: int = 32, max_length: int | None = None, precision: str | None = None,
                 sort_by_length: bool = True, cache_dir: str | os.PathLike | None = None, spinning: bool = True):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise KDCompressError(f"model directory {self.model_dir} does not exist; pass a directory made by "
                                  "`kdcompress export-onnx`")
        if batch_size < 1:
            raise KDCompressError(f"batch_size must be at least 1, not {batch_size}")
        chosen, _ = pick_model_file(self.model_dir, runtime)  # no model file, or the wrong one: say so first
        config = read_json_file(self.model_dir / "config.json", "model config")
        self.labels = list(labels_from_config(config, self.model_dir / "config.json"))
        self.multi_label = config.get("problem_type") == "multi_label_classification"
        load_encoder = partial(Encoder.from_dir, self.model_dir, config, max_length=max_length)
        load_backend = partial(open_backend, self.model_dir, chosen.name, threads=threads, precision=precision,
                               cache_dir=cache_dir, spinning=spinning)
        if chosen.name != "openvino":
            # ONNX Runtime holds the GIL while it builds a session: a thread would overlap nothing and only
            # add both loads' transient memory together (+24 MB peak, benchmarks/README.md).
            self.encoder = load_encoder()
            self.backend = load_backend()
        else:
            # OpenVINO and SentencePiece release the GIL: the tokenizer (0.6 s for a 250k vocabulary) loads
            # while the model compiles, 0.96-1.20 -> 0.65-0.78 s cold start (benchmarks/README.md).
            with ThreadPoolExecutor(max_workers=1) as pool:
                encoder = pool.submit(load_encoder)
                try:
                    self.backend = load_backend()
                finally:
                    self.encoder = encoder.result()  # where both fail, the tokenizer's error is the one raised
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        check_model_fits(self, config)

    @property
    def runtime(self) -> str:
        return self.backend.name

    def _feed(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.backend.input_names if n not in encoded]
        if missing:
            raise KDCompressError(f"the model needs input {missing[0]!r}, which the tokenizer does not produce; "
                                  "re-export the model with `kdcompress export-onnx`")
        return {name: encoded[name] for name in self.backend.input_names}

    def logits(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> np.ndarray:
        """Raw logits, shape (len(texts), num_labels), in input order."""
        _check_texts(texts, text_pairs)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        if not len(texts):
            return out
        encodings = self.encoder.encode(texts, text_pairs)
        order = np.arange(len(encodings))
        if self.sort_by_length:
            order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self.backend.run(self._feed(self.encoder.pad([encodings[i] for i in rows])))
        return out

    def probabilities(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> np.ndarray:
        """Softmax (sigmoid for multi-label models) of the logits, in input order."""
        logits = self.logits(texts, text_pairs).astype(np.float64)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> list[Prediction]:
        """One Prediction (label, score, probabilities by label) per text, in input order."""
        result = []
        for row in self.probabilities(texts, text_pairs):
            best = int(row.argmax())
            result.append(Prediction(self.labels[best], float(row[best]),
                                     {label: float(p) for label, p in zip(self.labels, row)}))
        return result
