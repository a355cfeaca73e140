"""Tokenize exactly as transformers' AutoTokenizer does, with the Rust `tokenizers` library alone (or, for a
unigram vocabulary, the SentencePiece twin the export proved identical: runtime/sentencepiece_tokenizer.py).

transformers' fast tokenizers are a thin layer over `tokenizer.json`: for `padding=True,
truncation=True, max_length=N` they enable "longest_first" truncation to N (special tokens
included) on the truncation side of tokenizer_config.json, and pad to the longest row with the
pad token on its padding side. `Encoder` does the same, except that it pads each length bucket
itself, after sorting, so one tokenizer call serves every batch.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdcompress.errors import KDCompressError, describe
from kdcompress.model_config import trained_max_length
from kdcompress.model_config import input_length_limit, labels_from_config  # noqa: F401 - the predictor's

TOKENIZER_FILE = "tokenizer.json"


def read_json_file(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"{path} not found; pass a directory made by `kdcompress export-onnx`") from None
    except (OSError, ValueError) as exc:
        raise KDCompressError(f"{what} at {path} cannot be read ({describe(exc)}); re-export the model") from None
    if not isinstance(value, dict):
        raise KDCompressError(f"{what} at {path} is not a JSON object; re-export the model")
    return value


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def model_max_length(config: dict, tokenizer_config: dict) -> int:
    """The longest input the model takes: what `kdcompress export-onnx` checks with (at most 512)."""
    return max(8, input_length_limit(config, tokenizer_config.get("model_max_length"), cap=512))


def _load_tokenizer(model_dir: Path) -> Any:
    """The export's SentencePiece twin where it has one and sentencepiece is installed, else tokenizer.json."""
    from kdcompress.runtime import sentencepiece_tokenizer

    if sentencepiece_tokenizer.has_sentencepiece_files(model_dir) and importlib.util.find_spec("sentencepiece"):
        try:
            return sentencepiece_tokenizer.SentencePieceTokenizer(model_dir)
        except Exception as exc:  # noqa: BLE001
            raise KDCompressError(f"the SentencePiece tokenizer in {model_dir} cannot be read ({describe(exc)}); "
                                  "re-export the model") from None
    from tokenizers import Tokenizer

    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise KDCompressError(f"{model_dir} has no {TOKENIZER_FILE}; re-export it with `kdcompress export-onnx` "
                              "(the predictor needs a fast tokenizer file)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise KDCompressError(f"{path} cannot be read ({describe(exc)}); re-export the model") from None


@dataclass
class Encoder:
    tokenizer: Any  # tokenizers.Tokenizer or its SentencePiece twin, truncation on, padding off
    max_length: int
    pad_id: int
    pad_type_id: int = 0
    padding_side: str = "right"

    @classmethod
    def from_dir(cls, model_dir: Path, config: dict, *, max_length: int | None = None) -> "Encoder":
        tokenizer = _load_tokenizer(model_dir)
        tok_config_path = model_dir / "tokenizer_config.json"
        tok_config = read_json_file(tok_config_path, "tokenizer config") if tok_config_path.is_file() else {}
        limit = model_max_length(config, tok_config)
        if max_length is not None and max_length < 2:
            raise KDCompressError(f"max_length must be at least 2, not {max_length}")
        length = min(max_length or trained_max_length(model_dir) or limit, limit)
        tokenizer.no_padding()
        tokenizer.enable_truncation(length, stride=0, strategy="longest_first",
                                    direction=tok_config.get("truncation_side") or "right")
        pad_token = _token_text(tok_config.get("pad_token"))
        pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
        if pad_id is None:
            pad_id = int(config.get("pad_token_id") or 0)
        return cls(tokenizer, length, int(pad_id), int(tok_config.get("pad_token_type_id") or 0),
                   tok_config.get("padding_side") or "right")

    def encode(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> list[Any]:
        """Unpadded, truncated encodings (special tokens added), one per text."""
        if text_pairs is None:
            inputs: list[Any] = list(texts)
        else:
            inputs = [text if pair is None else (text, pair) for text, pair in zip(texts, text_pairs, strict=True)]
        return self.tokenizer.encode_batch(inputs, add_special_tokens=True)

    def pad(self, encodings: Sequence[Any], width: int | None = None) -> dict[str, np.ndarray]:
        """input_ids, attention_mask and token_type_ids, padded to the longest row (or to `width` tokens,
        which must be at least the longest row: a fixed-shape batch)."""
        longest = max(len(e.ids) for e in encodings)
        if width is not None and width < longest:
            raise ValueError(f"width {width} is shorter than the longest row ({longest} tokens)")
        width = width or longest
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.full((len(encodings), width), self.pad_type_id, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            cols = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ids[row, cols] = encoding.ids
            mask[row, cols] = 1
            types[row, cols] = encoding.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def __call__(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None) -> dict[str, np.ndarray]:
        """Like `AutoTokenizer(texts, text_pairs, padding=True, truncation=True, max_length=...)`."""
        return self.pad(self.encode(texts, text_pairs))
