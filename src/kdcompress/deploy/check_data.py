"""Data choice for the export's checks: which task and languages, and the examples for the parity
check, `--accuracy-goal` and static calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdcompress.data.tasks import TASKS, Example, Task, get_task, normalise_lang, resolve_languages
from kdcompress.deploy.config import ExportConfig
from kdcompress.deploy.model_dir import SourceModel
from kdcompress.errors import KDCompressError

# Languages checked when none are given: scripts and families where int8 is known to differ.
DEFAULT_CHECK_LANGS = ("en", "de", "es", "ar", "hi", "ru", "sw", "th", "zh", "ur")
_META_LANG_KEYS = ("source_lang", "langs", "target_langs", "eval_langs", "languages")


@dataclass(frozen=True)
class CheckData:
    """The task, languages and data folder the checks use."""

    task: Task
    task_known: bool  # False: the model's labels match no task, and `task` only supplies sentences
    langs: list[str]
    data_dir: str | None
    label_map: np.ndarray | None  # model class index -> task label index; None when the labels differ
    explicit: bool  # the user named the task, languages or data folder: no synthetic fallback
    warning: str | None = None  # shown before the export starts, e.g. a --task whose labels the model lacks

    def load(self, split: str, limit: int) -> dict[str, list[Example]]:
        return {lang: self.task.load(split, lang, data_dir=self.data_dir, limit=limit) for lang in self.langs}


def choose_check_data(config: ExportConfig, source: SourceModel) -> CheckData:
    """--task / --langs / --data-dir, else what distill.json and the model's labels say."""
    task, task_known = _resolve_task(config.task, source)
    label_map = label_map_for(task, source.labels) if task_known else None
    if config.accuracy_goal is not None and label_map is None:
        raise KDCompressError(f"--accuracy-goal needs the model's labels to match a task's; {config.model_dir} has "
                              f"{source.labels[:4]}..., pass --task with the task it was trained on")
    warning = None
    if task_known and label_map is None:
        warning = (f"{config.model_dir} has labels {', '.join(source.labels[:4])}"
                   f"{', ...' if len(source.labels) > 4 else ''}, not task {task.name}'s "
                   f"({', '.join(task.labels)}); {task.name}'s sentences still check the graph against PyTorch, "
                   f"but no accuracy is measured: pass the --task the model was trained on")
    return CheckData(task, task_known, check_languages(task, config.langs, source.distill_meta), config.data_dir,
                     label_map, explicit=bool(config.task or config.langs or config.data_dir), warning=warning)


def check_inputs_readable(config: ExportConfig, data: CheckData) -> None:
    """Read the data files the export will need now, so a missing or malformed one fails before any work:
    the check sentences (where they are required, see export._check_set) and static int8's calibration."""
    try:
        data.load("dev", config.check_samples)
    except KDCompressError:
        if data.explicit or config.accuracy_goal is not None or config.quantize == "static":
            raise
    if config.quantize == "static":
        calibration_examples(config, data)


def label_map_for(task: Task, labels: Sequence[str]) -> np.ndarray | None:
    """Model class index -> task label index, when the model was trained on that task's labels."""
    if sorted(labels) == sorted(task.labels):
        return np.asarray([task.labels.index(label) for label in labels])
    if len(labels) == task.num_labels and all(label.upper().startswith("LABEL_") for label in labels):
        return np.arange(task.num_labels)  # unnamed labels: assume the task's order
    return None


def _resolve_task(name: str | None, source: SourceModel) -> tuple[Task, bool]:
    if name:
        return get_task(name), True
    meta_task = source.distill_meta.get("task")
    if isinstance(meta_task, str) and meta_task in TASKS:
        return TASKS[meta_task], True
    for candidate in TASKS.values():
        if sorted(source.labels) == sorted(candidate.labels):
            return candidate, True
    return TASKS["sib200"], False  # only a source of real multilingual sentences; labels unused


def _meta_langs(meta: dict) -> list[str]:
    langs: list[str] = []
    for key in _META_LANG_KEYS:
        value = meta.get(key)
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            langs += [str(v).strip() for v in value if str(v).strip()]
    return list(dict.fromkeys(langs))


def check_languages(task: Task, langs: Sequence[str] | None, distill_meta: dict) -> list[str]:
    """`langs` ('all' for every task language), else the languages distill.json names, else a spread of
    scripts the task has; in the task's own codes, repeats dropped, order kept."""
    from kdcompress.data.languages import FLORES_TO_ISO, parse_lang_list

    chosen = parse_lang_list(langs)
    if [lang.lower() for lang in chosen] == ["all"]:
        return list(task.languages)
    if not chosen:
        chosen = [l for l in _meta_langs(distill_meta) if FLORES_TO_ISO.get(l, l) in task.languages]
    if not chosen:
        chosen = [l for l in DEFAULT_CHECK_LANGS if l in task.languages]
    first, rest = resolve_languages(task, chosen[0], chosen[1:], default_all=False)
    return [first, *rest]


def calibration_examples(config: ExportConfig, data: CheckData) -> tuple[list[Example], str]:
    """`--calibration-data`: a text file (one example a line, TAB before a pair's second text),
    TASK:LANG[:SPLIT], or nothing for the task's training split in the source language.
    Returns the examples and where they came from."""
    limit = config.calibration_samples
    if config.calibration_data is None:
        if not data.task_known:
            raise KDCompressError("--quantize static needs calibration examples; pass --calibration-data "
                                  "(a text file, or TASK:LANG such as sib200:en) or --task")
        lang = "en" if "en" in data.task.languages else data.langs[0]
        examples = data.task.load("train", lang, data_dir=data.data_dir, limit=limit)
        return examples, f"{data.task.name} train {lang}"
    text = str(config.calibration_data)
    path = Path(text).expanduser()
    if path.is_file():
        return _file_examples(path)[:limit], f"file {path}"
    parts = text.split(":")
    if len(parts) in (2, 3) and parts[0] in TASKS:
        task = get_task(parts[0])
        lang = normalise_lang(task, parts[1])
        split = parts[2] if len(parts) == 3 else "train"
        return task.load(split, lang, data_dir=data.data_dir, limit=limit), f"{task.name} {split} {lang}"
    raise KDCompressError(f"--calibration-data {text!r} is neither a file nor TASK:LANG[:SPLIT] "
                          f"(tasks: {', '.join(TASKS)}); e.g. sib200:en")


def _file_examples(path: Path) -> list[Example]:
    examples: list[Any] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise KDCompressError(f"calibration file {path}, line {line}: not UTF-8 text; re-save it as UTF-8") from None
    except OSError as exc:
        raise KDCompressError(f"cannot read calibration file {path} ({exc.strerror}); check the path") from None
    for line in text.splitlines():
        if line.strip():
            first, _, second = line.partition("\t")
            examples.append(Example(first, second or None, -1))
    if not examples:
        raise KDCompressError(f"calibration file {path} has no text; write one example per line")
    return examples
