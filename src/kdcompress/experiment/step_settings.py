"""The settings that make each experiment step, as `kdcompress.reuse` records and compares them.

A step is reused only under the settings that made it: a student under its whole distill configuration, the
teacher fine-tuning under the settings its training reads (so that a student-only change does not retrain the
teacher), an export under its model and export table, the benchmark under its models and bench table. Folders made
before steps recorded their settings are judged by their own distill.json, so that an older experiment continues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from kdcompress.training.config import DistillConfig

#: Distill settings that the fine-tuned teacher does not depend on: the run's own control, where it is written.
_RUN_CONTROL = ("out", "resume", "overwrite")
#: The settings the teacher's fine-tuning reads (training/stages.py teacher_stage and loop_settings).
TEACHER_SETTINGS = ("teacher", "task", "data_dir", "source_lang", "seed", "teacher_lr", "teacher_epochs", "batch_size",
                     "warmup_ratio", "weight_decay", "max_steps", "grad_accum", "mixed_precision", "max_length",
                     "freeze_embeddings", "trust_remote_code")


def student_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The full distill configuration of a student (defaults filled in, so an explicit default changes nothing)."""
    full = DistillConfig.from_dict({**values, "out": "x"}, where="the experiment's step").to_dict()
    if not full["trim_vocab"]:  # read only when trimming: a step made before it existed still matches
        full.pop("trim_vocab_characters")
    return {k: v for k, v in full.items() if k not in _RUN_CONTROL}


def subset_settings(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Only the settings `keys` of a distill configuration: those a shared step (the teacher, a general student
    shared by several arms) depends on."""
    full = student_settings(values)
    return {k: full[k] for k in keys if k in full}


def teacher_settings(values: dict[str, Any]) -> dict[str, Any]:
    return subset_settings(values, TEACHER_SETTINGS)


def _distill_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "distill.json").read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def legacy_settings(keys: tuple[str, ...] | None = None) -> Callable[[Path], dict[str, Any] | None]:
    """A reader of what a folder made before records were written says about its settings (its distill.json):
    all of them, or only `keys`."""

    def read(folder: Path) -> dict[str, Any] | None:
        config = _distill_config(folder)
        if config is None:
            return None
        return student_settings(config) if keys is None else subset_settings(config, keys)

    return read
