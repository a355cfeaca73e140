"""Write a SentencePiece twin of a unigram tokenizer.json beside an export, when it gives the same ids.

The serving side (runtime/sentencepiece_tokenizer.py) says why: the twin loads in a fraction of the time
and memory. This module converts what it can express (a Unigram model, a precompiled character map with
SentencePiece's Metaspace conventions and a template post-processor) and then proves it: every text the
export checks, plus edge cases, must tokenize to the same ids and type ids through both, or no twin is
written and export.json says why.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Sequence

from kdcompress.runtime.sentencepiece_tokenizer import METASPACE, MODEL_FILE, NORMALIZER_FILE, PIPELINE_FILE

EDGE_CASES = ("", " ", "  leading and trailing  ", "tab\tand\u00a0no-break\u3000spaces", "Ａｂｃ１２３",
              "unknown \U0001F9FF\U0002F9FF characters \U000E0001", "<s> special </s> tokens <mask> inside <unk>",
              "e\u0301 combining", "a" * 600)


class NoTwin(Exception):
    """The tokenizer cannot be expressed, or the twin disagrees: the reason, for export.json."""


def _charsmap_mapping(charsmap: bytes) -> dict[str, str]:
    """The key -> replacement map inside a precompiled charsmap (the darts trie walked)."""
    trie_size = struct.unpack("<I", charsmap[:4])[0]
    units = struct.unpack(f"<{trie_size // 4}I", charsmap[4:4 + trie_size])
    replacements = charsmap[4 + trie_size:]

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    mapping, stack = {}, [(0, b"")]
    while stack:
        pos, key = stack.pop()
        base = pos ^ offset(units[pos])
        if (units[pos] >> 8) & 1:
            start = units[base] & ((1 << 31) - 1)
            mapping[key.decode("utf-8")] = replacements[start:replacements.index(b"\0", start)].decode("utf-8")
        for byte in range(1, 256):
            child = base ^ byte
            if child < len(units) and units[child] & ((1 << 31) | 0xFF) == byte:
                stack.append((child, key + bytes([byte])))
    return mapping


def _valid_for_sentencepiece(charsmap: bytes) -> bytes:
    """SentencePiece refuses a trie whose root has offset 0 (tokenizers does not): rebuild such a map."""
    from kdcompress.importers.unigram_tokenizer import precompiled_charsmap

    root = struct.unpack("<I", charsmap[4:8])[0]
    return charsmap if root >> 10 else precompiled_charsmap(_charsmap_mapping(charsmap))


def _pipeline(spec: dict) -> tuple[bytes, dict]:
    """(precompiled charsmap, pipeline JSON) for tokenizer.json `spec`, or NoTwin naming what does not fit."""
    model = spec.get("model") or {}
    if model.get("type") != "Unigram" or model.get("byte_fallback"):
        raise NoTwin(f"the tokenizer model is {model.get('type')}, not a Unigram without byte fallback")
    normalizers = spec.get("normalizer") or {}
    normalizers = normalizers.get("normalizers", [normalizers]) if normalizers else []
    if not normalizers or normalizers[0].get("type") != "Precompiled":
        raise NoTwin("the normaliser does not start with a precompiled character map")
    rest = normalizers[1:]
    if rest and not (len(rest) == 1 and rest[0].get("type") == "Replace"
                     and rest[0].get("pattern") == {"Regex": " {2,}"} and rest[0].get("content") == " "):
        raise NoTwin("the normaliser does more than a character map and collapsing spaces")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre else []
    kinds = [s.get("type") for s in steps]
    metaspace = next((s for s in steps if s.get("type") == "Metaspace"), None)
    if metaspace is None or metaspace.get("replacement") != METASPACE or metaspace.get("prepend_scheme") != "always":
        raise NoTwin("the pre-tokenizer is not Metaspace('▁', prepend always)")
    if kinds == ["Metaspace"] or kinds == ["Metaspace", "Split"]:
        spaces = "collapse"
    elif kinds == ["WhitespaceSplit", "Metaspace"]:
        spaces = "split"
    else:
        raise NoTwin(f"the pre-tokenizer sequence {kinds} has no SentencePiece equivalent here")
    if kinds == ["Metaspace", "Split"] and not (steps[1].get("behavior") == "Isolated" and not steps[1].get("invert")):
        raise NoTwin("the pre-tokenizer's Split is not the isolate-unknown-characters split")
    post = spec.get("post_processor") or {}
    if post.get("type") != "TemplateProcessing":
        raise NoTwin(f"the post-processor is {post.get('type')}, not a template")
    charsmap = base64.b64decode(normalizers[0]["precompiled_charsmap"])
    pipeline = {"spaces": spaces, "unk_per_char": kinds == ["Metaspace", "Split"], "unk_id": int(model["unk_id"]),
                "template": {"single": post["single"], "pair": post["pair"]},
                "special_tokens": post["special_tokens"],
                "added_tokens": [{k: t[k] for k in ("id", "content", "lstrip", "rstrip")}
                                 for t in spec.get("added_tokens", []) if not t.get("normalized")]}
    return charsmap, pipeline


def _model_proto(spec: dict, charsmap: bytes) -> tuple[bytes, bytes]:
    """(pieces model, normaliser-only model) as serialised SentencePiece ModelProtos."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    piece_type = pb.ModelProto.SentencePiece
    unk = int(spec["model"]["unk_id"])
    specials = {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
    model = pb.ModelProto()
    for i, (piece, score) in enumerate(spec["model"]["vocab"]):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = piece_type.UNKNOWN if i == unk else piece_type.CONTROL if i in specials else piece_type.NORMAL
    model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    model.trainer_spec.unk_id = unk
    model.trainer_spec.bos_id = model.trainer_spec.eos_id = model.trainer_spec.pad_id = -1
    # Spaces are settled before encoding (runtime side); SentencePiece adds "▁" in front and maps " " to "▁".
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    normalizer = pb.ModelProto()
    normalizer.normalizer_spec.name = "precompiled"
    normalizer.normalizer_spec.precompiled_charsmap = _valid_for_sentencepiece(charsmap)
    normalizer.normalizer_spec.add_dummy_prefix = False
    normalizer.normalizer_spec.remove_extra_whitespaces = False
    normalizer.normalizer_spec.escape_whitespaces = False
    return model.SerializeToString(), normalizer.SerializeToString()


def write_sentencepiece_twin(staging: Path, texts: Sequence[str], pairs: Sequence[str] | None,
                             max_length: int) -> dict:
    """Write the twin into `staging` beside tokenizer.json if it agrees on `texts` (and `pairs`); the record."""
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        return {"written": False, "why": "the sentencepiece package is not installed"}
    try:
        spec = json.loads((staging / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"written": False, "why": "no readable tokenizer.json"}
    written = [staging / MODEL_FILE, staging / NORMALIZER_FILE, staging / PIPELINE_FILE]
    try:
        charsmap, pipeline = _pipeline(spec)
        model, normalizer = _model_proto(spec, charsmap)
        written[0].write_bytes(model)
        written[1].write_bytes(normalizer)
        written[2].write_text(json.dumps(pipeline, ensure_ascii=False), encoding="utf-8")
        scores = [float(score) for _, score in spec["model"]["vocab"]]
        checked = _compare(staging, list(texts), pairs, max_length, scores)
    except Exception as exc:  # noqa: BLE001 - a twin that fails in any way is dropped; tokenizer.json serves
        for path in written:
            path.unlink(missing_ok=True)
        return {"written": False, "why": str(exc) if isinstance(exc, NoTwin) else f"conversion failed ({exc!r:.200})"}
    return {"written": True, "files": [p.name for p in written], "texts_checked": checked}


def _compare(staging: Path, texts: list[str], pairs: Sequence[str] | None, max_length: int,
             scores: Sequence[float]) -> int:
    """Every check text (and pair) must get the same ids. The edge cases may differ only by a tie: a segmentation
    of the same pieces' total score (the two libraries break exact ties in the Viterbi search differently; "a" * 600
    has many once a trimmed vocabulary lost the longer runs of "a")."""
    from tokenizers import Tokenizer

    from kdcompress.runtime.sentencepiece_tokenizer import SentencePieceTokenizer

    reference, twin = Tokenizer.from_file(str(staging / "tokenizer.json")), SentencePieceTokenizer(staging)
    reference.no_padding()
    reference.enable_truncation(max_length, strategy="longest_first")
    twin.enable_truncation(max_length)
    inputs: list = [*texts, *EDGE_CASES]
    if pairs:
        inputs += list(zip(texts, pairs))
    ties = 0
    for item, want, got in zip(inputs, reference.encode_batch(inputs), twin.encode_batch(inputs)):
        if want.ids == got.ids and want.type_ids == got.type_ids:
            continue
        if item in EDGE_CASES and _tie(want, got, scores):
            ties += 1
            continue
        raise NoTwin(f"SentencePiece tokenizes {item!r:.80} differently ({len(got.ids)} ids against "
                     f"{len(want.ids)}); tokenizer.json is used instead")
    return len(inputs)


def _tie(want, got, scores: Sequence[float]) -> bool:
    """The same number of pieces, the same type ids and the same total score: equally likely segmentations."""
    if len(want.ids) != len(got.ids) or want.type_ids != got.type_ids:
        return False
    total = lambda ids: sum(scores[i] for i in ids)  # noqa: E731
    return abs(total(want.ids) - total(got.ids)) <= 1e-6 * max(1.0, abs(total(want.ids)))
