"""The distillation strategies as data: one row per strategy, naming its ordered stages and its report label.

`distill` walks a row's stages; the CLI help, the experiment config, its summary and its report all read
this table, so a new strategy is one row here (plus, if it needs one, one stage in `stages.py`), the way
torchtune's `_recipe_registry.py` makes a method one recipe plus one registry row.

Stages (see `training/stages.py`):
    pretrain_kd   task-agnostic KD on unlabeled multilingual text -> a general student
    teacher       fine-tune the teacher on the source language (skipped when one is given)
    finetune      fine-tune the student on the source language with cross-entropy only
    finetune_kd   fine-tune the student with KD from the fine-tuned teacher (+ cross-entropy)
The last stage produces the student; a fine-tuning stage starts from the general student when `pretrain_kd`
ran (or `--general-student` gave one).

A row may carry `defaults`: distill settings it changes from DistillConfig's own defaults (a setting the user
gives still wins). `transfer`, the recipe our SIB-200 study recommends, is such a row: `finetune`'s stages with
the settings chosen on SIB-200 dev (configs/sib200_search.toml, docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdcompress.errors import KDCompressError


@dataclass(frozen=True)
class Strategy:
    name: str
    stages: tuple[str, ...]
    label: str  # how reports name its student
    summary: str  # one line for --help and docs
    defaults: dict[str, Any] = field(default_factory=dict)  # settings this row changes; the user's still win
    needs_targets: bool = False  # reads the target languages' unlabeled text

    @property
    def uses_finetuned_teacher(self) -> bool:
        return "finetune_kd" in self.stages

    @property
    def makes_classifier(self) -> bool:
        return self.stages[-1] != "pretrain_kd"


STRATEGY_TABLE: dict[str, Strategy] = {s.name: s for s in (
    Strategy("none", ("finetune",), "student, no KD",
             "fine-tune the student on the source language, no KD"),
    Strategy("finetune", ("teacher", "finetune_kd"), "student, KD in fine-tuning",
             "KD during fine-tuning, from a teacher fine-tuned on the source language"),
    Strategy("transfer", ("teacher", "finetune_kd"), "student, KD on a multilingual transfer set",
             "the recommended recipe (default with --target-langs): KD during fine-tuning on the task's unlabeled "
             "text in every language, the student taken from the bottom layers of the fine-tuned teacher",
             defaults={"kd_transfer": "source+corpus", "corpus": ["task"], "corpus_max_sentences": 5000,
                       "epochs": 2.0, "layer_selection": "bottom", "init_from": "finetuned-teacher", "alpha": 0.9},
             needs_targets=True),
    Strategy("pretrain", ("pretrain_kd", "finetune"), "student, KD in pretraining",
             "KD during pretraining on unlabeled multilingual text, then plain fine-tuning"),
    Strategy("both", ("pretrain_kd", "teacher", "finetune_kd"), "student, KD in both",
             "KD during pretraining, then KD during fine-tuning"),
    Strategy("general", ("pretrain_kd",), "general student (no task)",
             "KD during pretraining only: a task-agnostic student to fine-tune many times (--general-student)"),
)}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_TABLE)
#: The strategies that end in a task classifier (what experiments compare).
CLASSIFIER_STRATEGIES: tuple[str, ...] = tuple(n for n, s in STRATEGY_TABLE.items() if s.makes_classifier)


def default_strategy(target_langs: Any) -> str:
    """`distill` without --strategy: the recommended recipe where target languages are given, else English-only KD."""
    return "transfer" if target_langs else "finetune"


def get_strategy(name: str) -> Strategy:
    if not isinstance(name, str):  # e.g. strategy = ["finetune"] in a config table: a list cannot be looked up
        raise KDCompressError(f"strategy must be a string, not {name!r}; choose from {', '.join(STRATEGY_NAMES)}")
    try:
        return STRATEGY_TABLE[name]
    except KeyError:
        raise KDCompressError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}") from None


def strategies_help() -> str:
    return "; ".join(f"{s.name}: {s.summary}" for s in STRATEGY_TABLE.values())
