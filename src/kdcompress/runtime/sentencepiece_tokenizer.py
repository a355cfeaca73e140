"""A unigram tokenizer served by SentencePiece instead of `tokenizers`, with the same ids.

Why: `tokenizers`' Unigram model builds a trie of hash maps over every piece. For a 250k-piece
vocabulary (XLM-R, multilingual-e5) loading it takes 270 MB of memory and 0.75 s, more than the int8
model it feeds. SentencePiece holds the same pieces in a double array. `kdcompress export-onnx` writes
the files this reads (deploy/sentencepiece_twin.py) only when they reproduce tokenizer.json's ids on
every sentence the export checks, so this class implements exactly the pipeline those exports use:
added tokens split off first, the precompiled character map, space handling, unigram Viterbi, one
<unk> per unknown character where the original isolates them, the post-processor's template and
"longest_first" truncation, each mirroring its `tokenizers` counterpart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

MODEL_FILE = "sentencepiece.model"  # pieces and scores; identity normaliser, "▁" prefix, no space removal
NORMALIZER_FILE = "sentencepiece.normalizer"  # the precompiled character map alone
PIPELINE_FILE = "sentencepiece.json"  # template, added tokens and space handling, from tokenizer.json
FILES = (MODEL_FILE, NORMALIZER_FILE, PIPELINE_FILE)
_SPACES = re.compile(" {2,}")
METASPACE = "\u2581"


@dataclass
class Encoding:
    ids: list[int]
    type_ids: list[int]

    def truncate(self, max_length: int) -> None:
        """In place, from the right, as `tokenizers.Encoding.truncate` does by default."""
        del self.ids[max_length:], self.type_ids[max_length:]


def has_sentencepiece_files(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in FILES)


class SentencePieceTokenizer:
    """The subset of `tokenizers.Tokenizer` that runtime.encoding.Encoder uses."""

    def __init__(self, model_dir: Path):
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / MODEL_FILE))
        self._normalizer = sentencepiece.SentencePieceNormalizer(model_file=str(model_dir / NORMALIZER_FILE))
        pipeline = json.loads((model_dir / PIPELINE_FILE).read_text(encoding="utf-8"))
        self._spaces = pipeline["spaces"]  # "collapse" (Replace " {2,}") or "split" (WhitespaceSplit)
        self._unk_per_char = bool(pipeline["unk_per_char"])
        self._unk_id = int(pipeline["unk_id"])
        self._template = pipeline["template"]  # TemplateProcessing's "single" and "pair" lists
        self._special_ids = {name: int(token["ids"][0]) for name, token in pipeline["special_tokens"].items()}
        added = sorted(pipeline["added_tokens"], key=lambda t: -len(t["content"]))
        self._added = {t["content"]: int(t["id"]) for t in added}
        self._added_pattern = re.compile("|".join(
            ("\\s*" if t.get("lstrip") else "") + re.escape(t["content"]) + ("\\s*" if t.get("rstrip") else "")
            for t in added)) if added else None
        self._max_length: int | None = None
        self._direction = "right"

    # --- the tokenizers.Tokenizer surface -----------------------------------------------------------

    def no_padding(self) -> None:
        """Padding is the Encoder's job; nothing to switch off here."""

    def enable_truncation(self, max_length: int, stride: int = 0, strategy: str = "longest_first",
                          direction: str = "right") -> None:
        if stride or strategy != "longest_first":
            raise ValueError("only longest_first truncation without stride is implemented")
        self._max_length, self._direction = max_length, direction

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        piece_id = self._processor.piece_to_id(token)
        return None if piece_id == self._unk_id and token != self._processor.id_to_piece(self._unk_id) else piece_id

    def encode_batch(self, inputs: Sequence[Any], add_special_tokens: bool = True) -> list[Encoding]:
        return [self._encode(item if isinstance(item, tuple) else (item, None), add_special_tokens) for item in inputs]

    # --- the pipeline ---------------------------------------------------------------------------------

    def _encode(self, item: tuple[str, str | None], add_special_tokens: bool) -> Encoding:
        first = self._pieces(item[0])
        second = self._pieces(item[1]) if item[1] is not None else None
        if self._max_length is not None:
            reserved = self._special_count(second is not None) if add_special_tokens else 0
            first, second = self._truncate(first, second, max(0, self._max_length - reserved))
        if not add_special_tokens:
            ids = first + (second or [])
            return Encoding(ids, [0] * len(ids))
        ids, type_ids = [], []
        sequences = {"A": first, "B": second or []}
        for part in self._template["pair" if second is not None else "single"]:
            if "SpecialToken" in part:
                ids.append(self._special_ids[part["SpecialToken"]["id"]])
                type_ids.append(int(part["SpecialToken"]["type_id"]))
            else:
                sequence = sequences[part["Sequence"]["id"]]
                ids.extend(sequence)
                type_ids.extend([int(part["Sequence"]["type_id"])] * len(sequence))
        return Encoding(ids, type_ids)

    def _special_count(self, pair: bool) -> int:
        return sum("SpecialToken" in part for part in self._template["pair" if pair else "single"])

    def _pieces(self, text: str) -> list[int]:
        """Ids of `text` without the template: added tokens split off first, as `tokenizers` does."""
        if self._added_pattern is None:
            return self._segment(text)
        ids, start = [], 0
        for match in self._added_pattern.finditer(text):
            ids += self._segment(text[start:match.start()])
            ids.append(self._added[match.group().strip()])
            start = match.end()
        return ids + self._segment(text[start:])

    def _segment(self, text: str) -> list[int]:
        normalized = self._normalizer.normalize(text)
        if self._spaces == "split":
            normalized = " ".join(normalized.split())
        else:
            normalized = _SPACES.sub(" ", normalized)
        if normalized.startswith(" "):  # Metaspace adds "▁" only where the text has no leading space
            normalized = normalized[1:]
            if not normalized:  # the text was one space: "▁" alone
                return [self._processor.piece_to_id(METASPACE)]
        if not normalized:
            return []
        ids = self._processor.encode(normalized)
        if self._unk_per_char and self._unk_id in ids:
            # SentencePiece fuses neighbouring unknown characters into one <unk>; the original isolates them.
            pieces = self._processor.encode(normalized, out_type=str)  # an unknown run comes back as its text
            ids = [i for i, piece in zip(ids, pieces) for _ in range(len(piece) if i == self._unk_id else 1)]
        return ids

    def _truncate(self, first: list[int], second: list[int] | None, budget: int):
        """`tokenizers`' longest_first: the longer sequence gives up tokens first, ties split evenly."""
        cut = (lambda ids, n: ids[:n]) if self._direction == "right" else (lambda ids, n: ids[len(ids) - n:])
        if second is None:
            return (cut(first, budget) if len(first) > budget else first), None
        n1, n2 = len(first), len(second)
        if n1 + n2 <= budget:
            return first, second
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > budget else max(n1, budget - n1)
        if n1 + n2 > budget:
            n1 = budget // 2
            n2 = n1 + budget % 2
        if swap:
            n1, n2 = n2, n1
        return cut(first, min(n1, len(first))), cut(second, min(n2, len(second)))
