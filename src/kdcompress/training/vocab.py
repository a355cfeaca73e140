"""Vocabulary trimming: keep only the tokens a corpus uses, and a tokenizer that emits the new ids.

mBERT's 119,547 x 768 embedding matrix is over 40% of its weights, and a model serving a
handful of languages touches a small part of it. Trimming is exact on covered text:
WordPiece's greedy longest match and Unigram's best segmentation both stay the same when
only pieces that the original segmentation never chose are removed.

The `tokenizers` library has no "sub-vocabulary" operation, so we rewrite its JSON
serialisation: the model's vocabulary, the added tokens and the post-processor's ids.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from kdcompress.errors import KDCompressError


def collect_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], *, min_count: int = 1,
                      batch_size: int = 1000) -> list[int]:
    """Sorted ids of every token the tokenizer produces on `texts` at least `min_count` times, plus all special
    tokens."""
    counts: Counter[int] = Counter(dict.fromkeys(tokenizer.all_special_ids, min_count))
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=True, truncation=False)["input_ids"]:
            counts.update(ids)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return sorted(token for token, count in counts.items() if count >= min_count)


def character_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the tokens that spell one character (with or without the word-start or continuation mark).

    Kept beside a corpus's tokens, they let any text written in characters the vocabulary knows be segmented into
    known tokens: Unigram finds a segmentation through them, WordPiece's longest match falls back to them."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if spec["type"] == "Unigram":
        pieces = enumerate(piece for piece, _score in spec["vocab"])
    elif spec["type"] in ("WordPiece", "BPE"):
        pieces = ((i, token) for token, i in spec["vocab"].items())
    else:
        return []
    marks = ("\u2581", spec.get("continuing_subword_prefix") or "##", "\u0120")
    ids = []
    for i, piece in pieces:
        for mark in marks:
            if piece.startswith(mark) and len(piece) > len(mark):
                piece = piece[len(mark):]
                break
        if len(piece) == 1:
            ids.append(i)
    return ids


def _remap_post_processor(node: dict | None, new_id: dict[int, int]) -> None:
    if node is None:
        return
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for special in node["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = node[key]
            node[key] = [token, new_id[old]]
    elif kind == "Sequence":
        for child in node["processors"]:
            _remap_post_processor(child, new_id)
    elif kind not in ("ByteLevel",):
        raise KDCompressError(f"cannot trim a tokenizer with post-processor {kind!r}; run without --trim-vocab")


def trim_tokenizer_json(spec: dict, keep_ids: list[int]) -> dict:
    """Return a copy of a tokenizer.json dict whose vocabulary holds only `keep_ids`, renumbered 0..n-1."""
    spec = json.loads(json.dumps(spec))
    new_id = {old: new for new, old in enumerate(keep_ids)}
    model = spec["model"]
    if model["type"] == "WordPiece" or model["type"] == "BPE":
        by_id = {i: token for token, i in model["vocab"].items()}
        model["vocab"] = {by_id[old]: new for old, new in new_id.items() if old in by_id}
        if model["type"] == "BPE":
            kept = set(model["vocab"])
            merges = model.get("merges", [])
            model["merges"] = [m for m in merges if "".join(m if isinstance(m, list) else m.split(" ")) in kept]
    elif model["type"] == "Unigram":
        pieces = model["vocab"]
        if model.get("unk_id") is not None and model["unk_id"] not in new_id:
            raise KDCompressError("the tokenizer's unknown token would be trimmed; this tokenizer cannot be trimmed")
        model["vocab"] = [pieces[old] for old in keep_ids if old < len(pieces)]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        raise KDCompressError(f"cannot trim a {model['type']} tokenizer; run without --trim-vocab")
    for added in spec.get("added_tokens", []):
        if added["id"] not in new_id:
            raise KDCompressError(f"special token {added['content']!r} would be trimmed; run without --trim-vocab")
        added["id"] = new_id[added["id"]]
    _remap_post_processor(spec.get("post_processor"), new_id)
    return spec


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase, keep_ids: list[int]) -> PreTrainedTokenizerBase:
    """A tokenizer of the same class and settings that maps text to ids into `keep_ids`' positions."""
    if not getattr(tokenizer, "is_fast", False):
        raise KDCompressError("--trim-vocab needs a fast (tokenizers-backed) tokenizer")
    spec = trim_tokenizer_json(json.loads(tokenizer.backend_tokenizer.to_str()), keep_ids)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for stale in Path(tmp).iterdir():  # slow-tokenizer vocab files would disagree with the new ids
            if stale.name in ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json", "merges.txt"):
                stale.unlink()
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)
