"""Does an exported model fit its own files? Checked once when a Predictor loads, so that predict never runs a
graph whose outputs its labels do not name, or a tokenizer whose ids run past the model's embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcompress.errors import KDCompressError


def _vocab_size(tokenizer: Any) -> int | None:
    size = getattr(tokenizer, "get_vocab_size", None)
    try:
        return int(size(with_added_tokens=True)) if size else None
    except TypeError:
        return int(size())


def check_model_fits(predictor: Any, config: dict) -> None:
    """Raise one line when the tokenizer's ids exceed config.json's vocab_size or the graph's outputs are not one
    score per id2label entry (found by running the graph once on a short text)."""
    folder = predictor.model_dir
    vocab = _vocab_size(predictor.encoder.tokenizer)
    embedding = config.get("vocab_size")
    if isinstance(embedding, int) and vocab is not None and vocab > embedding:
        raise KDCompressError(f"the tokenizer in {folder} has {vocab} tokens but the model's embedding "
                              f"(config.json vocab_size) {embedding}: ids past it would fail or read the wrong rows; "
                              "re-export the model with its own tokenizer")
    encoded = predictor.encoder.pad(predictor.encoder.encode(["a"]))
    outputs = np.asarray(predictor.backend.run(predictor._feed(encoded)))
    if outputs.ndim != 2 or outputs.shape[-1] != len(predictor.labels):
        raise KDCompressError(f"the graph in {folder} gives {outputs.shape[-1] if outputs.ndim else 0} scores per text "
                              f"but config.json's id2label names {len(predictor.labels)} labels; re-export the model "
                              "(kdcompress export-onnx) so that both come from the same classifier")
