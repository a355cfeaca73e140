"""Turn example indices into tokenized, padded batches (teacher ids and, with a trimmed vocabulary, student ids)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


def token_id_map(teacher_vocab_size: int, keep_token_ids: list[int], unk_id: int) -> torch.Tensor:
    """Lookup table teacher id -> student id; tokens outside the kept vocabulary become the student's unk."""
    table = torch.full((teacher_vocab_size,), unk_id, dtype=torch.long)
    table[torch.tensor(keep_token_ids)] = torch.arange(len(keep_token_ids))
    return table


class TextBatcher:
    """Collate function: tokenizes with the teacher's tokenizer once, so teacher and student see the same pieces.

    With a trimmed student vocabulary, `model_inputs(..., id_map=)` maps the same pieces to the student's ids.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str | None] | None = None,
                 labels: list[int] | None = None, *, max_length: int = 128, kd_mask: list[bool] | None = None):
        self.tokenizer = tokenizer
        self.texts = texts
        self.pairs = pairs if pairs and any(p is not None for p in pairs) else None
        self.labels = labels
        self.max_length = max_length
        self.kd_mask = kd_mask  # which rows the KD term covers (a transfer set mixes labelled and unlabeled rows)

    def __len__(self) -> int:
        return len(self.texts)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        texts = [self.texts[i] for i in indices]
        pairs = [self.pairs[i] for i in indices] if self.pairs else None
        batch = dict(self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=True,
                                    return_tensors="pt"))
        batch["index"] = torch.tensor(indices)
        if self.labels is not None:
            batch["labels"] = torch.tensor([self.labels[i] for i in indices])
        if self.kd_mask is not None:
            batch["kd_mask"] = torch.tensor([self.kd_mask[i] for i in indices])
        return batch


def model_inputs(batch: dict[str, torch.Tensor], *, student: bool, id_map: torch.Tensor | None = None,
                 input_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The inputs a teacher or student forward takes from a batch (optionally with replaced input ids)."""
    ids = batch["input_ids"] if input_ids is None else input_ids
    if student and id_map is not None:
        ids = id_map.to(ids.device)[ids]
    inputs = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return inputs
