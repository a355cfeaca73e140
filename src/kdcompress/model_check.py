"""Cheap checks of a model folder, run before any work: a usable tokenizer that fits the model, readable
weights, and the longest input the model's positions allow.

None of them loads the model. A folder without tokenizer files is the dangerous case: transformers 5 then
builds a 5-token tokenizer from config.json alone, every word becomes [UNK], and the numbers that follow
are meaningless without any error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdcompress.errors import KDCompressError, describe
from kdcompress.model_config import model_max_positions  # noqa: F401 - its callers' import path
from kdcompress.runtime.registry import exported_runtimes

# Files that carry a vocabulary; any one of them (with tokenizer_config.json) lets transformers build a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "sentencepiece.model",
                   "tokenizer.model", "vocab.json")
TOKENIZER_CONFIG = "tokenizer_config.json"
# Fewer ordinary (non-special) tokens than this and almost every word would become the unknown token.
MIN_ORDINARY_TOKENS = 10
# A tokenizer with fewer tokens than this share of the model's vocab_size is another model's tokenizer.
MIN_VOCAB_SHARE = 0.5
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"



def _folder(path: str | os.PathLike, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        if folder.exists():
            raise KDCompressError(f"{what} {folder} is a file; pass a model folder (config.json, weights, tokenizer)")
        raise KDCompressError(f"{what} {folder} does not exist; pass a model folder (config.json, weights, tokenizer)")
    return folder


def check_model_dir_tokenizer(path: str | os.PathLike, vocab_size: int | None = None, *, what: str = "model"):
    """Check that the model folder `path` holds a usable tokenizer that fits the model; return the tokenizer.

    Usable: tokenizer files (tokenizer.json, or vocab.txt / a sentencepiece model) with tokenizer_config.json,
    loadable by AutoTokenizer, with at least MIN_ORDINARY_TOKENS tokens that are not special tokens. Fits:
    len(tokenizer) <= `vocab_size` (the model's config.vocab_size; ids past it would index outside the
    embedding) and at least MIN_VOCAB_SHARE of it. Each failure is one KDCompressError line naming `what`.
    """
    folder = _folder(path, what)
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    save_hint = "save the tokenizer beside the model (tokenizer.save_pretrained)"
    if not present:
        raise KDCompressError(f"{what} {folder} has no tokenizer files (tokenizer.json or vocab.txt); {save_hint}")
    config_file = folder / TOKENIZER_CONFIG
    if not config_file.is_file():
        raise KDCompressError(f"{what} {folder} has {present[0]} but no {TOKENIZER_CONFIG}; {save_hint}")
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KDCompressError(f"{what} {folder}: {TOKENIZER_CONFIG} is unreadable ({describe(exc)}); {save_hint}") from None

    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - corrupt tokenizer.json, missing sentencepiece, ...: one line
        raise KDCompressError(f"{what} {folder}: its tokenizer does not load ({describe(exc)}); {save_hint}") from None

    size = len(tokenizer)
    ordinary = size - len({i for i in tokenizer.all_special_ids if i is not None and 0 <= i < size})
    if ordinary < MIN_ORDINARY_TOKENS:
        raise KDCompressError(f"{what} {folder}: its tokenizer holds only {size} tokens ({ordinary} besides special "
                              f"tokens), so nearly every word would become the unknown token; save the tokenizer the "
                              f"model was trained with beside it (tokenizer.save_pretrained)")
    if vocab_size is not None:
        if size > vocab_size:
            raise KDCompressError(f"{what} {folder}: its tokenizer has {size} tokens but the model's vocabulary has only "
                                  f"{vocab_size} (config.json vocab_size); save the tokenizer the model was trained with "
                                  f"beside it")
        if size < MIN_VOCAB_SHARE * vocab_size:
            raise KDCompressError(f"{what} {folder}: its tokenizer has {size} tokens, far fewer than the model's "
                                  f"{vocab_size} (config.json vocab_size), so it is another model's tokenizer; save the "
                                  f"tokenizer the model was trained with beside it")
    return tokenizer


def _open_safetensors(file: Path, folder: Path, what: str) -> int:
    """The number of tensors in a safetensors file; a truncated or corrupt one is a one-line error."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return len(list(handle.keys()))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: one line
        raise KDCompressError(f"{what} {folder}: {file.name} is truncated or corrupt ({describe(exc)}); copy it "
                              f"again or save the model again (model.save_pretrained)") from None


def check_weights_readable(path: str | os.PathLike, *, what: str = "model") -> None:
    """Check that the model folder `path` holds readable weights, without loading them.

    model.safetensors (or the shards its index lists) is opened with safetensors' safe_open, which reads
    the header and checks that the file covers every tensor: a truncated, empty or corrupt file is a
    one-line KDCompressError. pytorch_model.bin is left to the loader. A folder with no weights (e.g. an
    ONNX export) is refused.
    """
    folder = _folder(path, what)
    single = folder / WEIGHTS_FILE
    index = folder / WEIGHTS_INDEX
    if single.is_file():
        if _open_safetensors(single, folder, what) == 0:
            raise KDCompressError(f"{what} {folder}: {WEIGHTS_FILE} holds no tensors; save the model again "
                                  f"(model.save_pretrained)")
        return
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise KDCompressError(f"{what} {folder}: {WEIGHTS_INDEX} is corrupt ({describe(exc)}); save the model "
                                  f"again (model.save_pretrained)") from None
        for shard in shards:
            file = folder / shard
            if not file.is_file():
                raise KDCompressError(f"{what} {folder}: weight shard {shard} listed in {WEIGHTS_INDEX} is missing; "
                                      f"copy the whole model folder again")
            _open_safetensors(file, folder, what)
        return
    if (folder / "pytorch_model.bin").is_file():
        return
    exported = next((row for row in exported_runtimes() if row.owns(folder)), None)
    if exported is not None:
        raise KDCompressError(f"{what} {folder} holds an {exported.model_kind} model, not PyTorch weights ({WEIGHTS_FILE}); "
                              f"pass the model folder it was exported from")
    raise KDCompressError(f"{what} {folder} has no model weights ({WEIGHTS_FILE}); pass a folder saved with "
                          f"model.save_pretrained")
