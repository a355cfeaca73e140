"""Facts read from a model's config.json, the same way everywhere (training, export, bench, serving):
the label names in the model's order and the longest input its positions allow.

Torch-free: `config` is a PretrainedConfig or the dict of its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdcompress.errors import KDCompressError

# Model types whose position ids start after the padding index (RoBERTa's scheme): pad_token_id + 1 of the
# max_position_embeddings rows are never used for a real token (XLM-R: 514 rows, 512 tokens).
_PADDING_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                                   "data2vec-text", "mpnet", "roberta-prelayernorm", "ibert", "luke", "markuplm",
                                   "lilt", "xmod", "esm"})
DEFAULT_MAX_POSITIONS = 512
# Hugging Face tokenizers store a huge sentinel as model_max_length when it is unset.
_UNSET_TOKENIZER_LIMIT = 100_000


def _get(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def model_max_positions(config: Any) -> int:
    """The most tokens one input may hold for this model config.

    BERT-style models: max_position_embeddings (512 for mBERT). RoBERTa-style ones (XLM-R, ...) number
    positions from pad_token_id + 1, so that many rows are never used: 514 - 2 = 512. Where the config has
    no max_position_embeddings, DEFAULT_MAX_POSITIONS.
    """
    positions = _get(config, "max_position_embeddings")
    if positions is None:
        positions = _get(config, "n_positions")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return DEFAULT_MAX_POSITIONS
    if _get(config, "model_type") in _PADDING_OFFSET_TYPES:
        pad = _get(config, "pad_token_id")
        positions -= (pad if isinstance(pad, int) and pad >= 0 else 1) + 1
    return max(positions, 1)


def input_length_limit(config: Any, tokenizer_limit: Any = None, *, cap: int | None = None) -> int:
    """The longest input to truncate to: the model's positions, the tokenizer's own limit where it sets one,
    and `cap` (export and serving use 512, the longest length the export checks)."""
    limits = [model_max_positions(config)]
    if isinstance(tokenizer_limit, (int, float)) and 0 < tokenizer_limit < _UNSET_TOKENIZER_LIMIT:
        limits.append(int(tokenizer_limit))
    if cap is not None:
        limits.append(cap)
    return min(limits)


TRAINING_RECORD = "distill.json"  # written by distill; export copies it beside the exported model


def trained_max_length(model_dir: str | Path) -> int | None:
    """The truncation length the model was trained at, or None where no training record says.

    Export, bench and predict truncate to it unless told otherwise, so that bench's accuracy and predict's labels
    see the tokens training saw (a model trained on 64 tokens and served on 128 reads text it never learned from).
    """
    try:
        record = json.loads((Path(model_dir) / TRAINING_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = record.get("max_length") if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def labels_from_config(config: dict, where: Any) -> tuple[str, ...]:
    """The label names in the model's output order, from config.json's id2label (`where` names the file)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise KDCompressError(f"{where} has no id2label; the model must be a sequence classifier fine-tuned "
                              "for the task (re-export it)")
    try:
        by_index = {int(index): str(name) for index, name in id2label.items()}
    except (TypeError, ValueError):
        raise KDCompressError(f'{where} has a malformed id2label; expected {{"0": "label", ...}}') from None
    if sorted(by_index) != list(range(len(by_index))):
        raise KDCompressError(f"{where}'s id2label indices are not 0..{len(by_index) - 1}; fix the config")
    return tuple(by_index[i] for i in range(len(by_index)))
