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
"""

from __future__ import annotations

from dataclasses import dataclass

from kdcompress.errors import KDCompressError


@dataclass(frozen=True)
class Strategy:
    name: str
    stages: tuple[str, ...]
    label: str  # how reports name its student
    summary: str  # one line for --help and docs

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


def get_strategy(name: str) -> Strategy:
    if not isinstance(name, str):  # e.g. strategy = ["finetune"] in a config table: a list cannot be looked up
        raise KDCompressError(f"strategy must be a string, not {name!r}; choose from {', '.join(STRATEGY_NAMES)}")
    try:
        return STRATEGY_TABLE[name]
    except KeyError:
        raise KDCompressError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}") from None


def strategies_help() -> str:
    return "; ".join(f"{s.name}: {s.summary}" for s in STRATEGY_TABLE.values())
