"""The transfer set of KD during fine-tuning: the labelled source-language examples plus, with
`--kd-transfer corpus|source+corpus`, unlabeled text in the target languages that carries only the
fine-tuned teacher's soft labels. No target-language label is read, so results stay zero-shot."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from kdcompress.data.corpus import task_only_splits
from kdcompress.data.tasks import Example, Task, fingerprint
from kdcompress.errors import KDCompressError
from kdcompress.training.config import DistillConfig
from kdcompress.training.losses import UNLABELED


@dataclass(frozen=True)
class TransferSet:
    """The rows of KD during fine-tuning: labelled source examples and unlabeled transfer text, with which rows
    the KD term covers. `kind` tells the two kinds of text apart: "task" is the task's own train/dev text in
    the other languages (in SIB-200, translations of the English training sentences), "generic" is text
    that is not parallel to the training data."""

    examples: list[Example]
    kd_mask: list[bool]
    kind: str  # "source only", "task" or "generic"
    unlabeled: int

    def record(self) -> dict:
        return {"kind": self.kind, "labelled": len(self.examples) - self.unlabeled, "unlabeled": self.unlabeled,
                "fingerprint": fingerprint(self.examples)}


def build_transfer_set(cfg: DistillConfig, task: Task, source: str, targets: list[str], data_dir, train: list[Example],
                  corpus: list[str] | None) -> TransferSet:
    mode = cfg.kd_transfer
    source_kd = mode in ("source", "source+corpus")
    if mode == "source":
        return TransferSet(train, [True] * len(train), "source only", 0)
    task_splits = task_only_splits(cfg.corpus)
    if task_splits and not targets:
        raise KDCompressError("the transfer set holds no target-language text: pass --target-langs (or 'all'), "
                              "or a --corpus of other languages")
    pairs = any(e.text_pair for e in train)
    if pairs:  # pair tasks: the task's own unlabeled target-language pairs (single sentences would not fit)
        if not task_splits:
            raise KDCompressError(f"--kd-transfer {mode} on pair task {task.name} needs sentence pairs: use --corpus "
                                  "task (the targets' unlabeled train/dev pairs)")
        per_lang = [[Example(e.text, e.text_pair, UNLABELED) for split in task_splits
                     for e in _maybe_load(task, split, lang, data_dir)] for lang in targets]
        # Round-robin over the languages, so that a cap keeps every language rather than the first few.
        unlabeled = [e for row in itertools.zip_longest(*per_lang) for e in row if e is not None]
        unlabeled = unlabeled[:cfg.corpus_max_sentences]
        if not unlabeled and task_splits == ("train",):
            raise KDCompressError(
                f"the transfer set is empty: this data folder has no {task.name} train pairs in the target languages "
                "(locally XNLI and PAWS-X train English only); use --corpus task for their unlabeled train and dev "
                "pairs (a choice then read on dev has seen dev text), or the hub, which has their translated train")
    else:
        unlabeled = [Example(text, None, UNLABELED) for text in corpus or []]
    if not unlabeled:
        raise KDCompressError(f"the transfer set for --kd-transfer {mode} is empty; check --corpus and --target-langs")
    kind = "task" if task_splits else "generic"
    return TransferSet(train + unlabeled, [source_kd] * len(train) + [True] * len(unlabeled), kind, len(unlabeled))


def _maybe_load(task: Task, split: str, lang: str, data_dir) -> list[Example]:
    try:
        return task.load(split, lang, data_dir=data_dir)
    except KDCompressError:
        return []  # e.g. XNLI has no local training split in the target languages
