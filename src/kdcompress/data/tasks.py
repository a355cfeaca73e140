"""The task registry: labels, languages and `load(split, lang)` from a local folder or the hub.

A local folder is laid out like ../shared/data (see its README). Where no folder is given
and $KDCOMPRESS_DATA_DIR is unset, tasks load from the Hugging Face hub with `datasets`,
which is what users with network access run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from kdcompress.data.languages import FLORES_TO_ISO, ISO_TO_FLORES
from kdcompress.errors import KDCompressError

DATA_DIR_ENV = "KDCOMPRESS_DATA_DIR"
SPLITS = ("train", "dev", "test")


class Example(NamedTuple):
    text: str
    text_pair: str | None
    label: int


def data_dir_from_env(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data folder: the explicit argument, else $KDCOMPRESS_DATA_DIR, else None (hub)."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if value in (None, ""):
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise KDCompressError(
            f"data folder {path} does not exist; pass --data-dir pointing to a folder laid out like "
            f"shared/data, or unset ${DATA_DIR_ENV} to load from the Hugging Face hub"
        )
    return path


def _read_tsv(path: Path, *, header: bool) -> list[list[str]]:
    if not path.is_file():
        raise KDCompressError(f"data file {path} is missing; check --data-dir (it must be laid out like shared/data)")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


@dataclass(frozen=True)
class Task:
    """A labelled classification task in many languages."""

    name: str
    labels: tuple[str, ...]
    languages: tuple[str, ...]
    is_pair: bool
    description: str
    _local: Callable[["Task", Path, str, str], list[Example]] = field(repr=False)
    _hub: Callable[["Task", str, str], list[Example]] = field(repr=False)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def check_lang(self, lang: str) -> str:
        if lang not in self.languages:
            raise KDCompressError(
                f"task {self.name} has no language {lang!r}; choose from {', '.join(self.languages)}"
            )
        return lang

    def load(self, split: str, lang: str, *, data_dir: str | os.PathLike | None = None,
             limit: int | None = None) -> list[Example]:
        """Examples of one split ("train", "dev", "test") in one language."""
        if split not in SPLITS:
            raise KDCompressError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        self.check_lang(lang)
        folder = data_dir_from_env(data_dir)
        examples = self._local(self, folder, split, lang) if folder else self._hub(self, split, lang)
        if not examples:
            raise KDCompressError(f"{self.name} {split} split for {lang!r} is empty; check the data folder")
        return examples[:limit] if limit else examples

    def label_index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise KDCompressError(f"{self.name}: unknown label {label!r} in the data; expected one of {self.labels}") from None


def fingerprint(examples: list[Example]) -> str:
    """A short content hash of a dataset slice, recorded in distill.json / bench.json."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.text}\x1f{ex.text_pair}\x1f{ex.label}\x1e".encode())
    return digest.hexdigest()[:16]


def _hub_rows(path: str, config: str, split: str):
    # Imported lazily: `datasets` is slow to import and only the hub path needs it.
    try:
        from datasets import load_dataset

        return load_dataset(path, config, split=split)
    except Exception as exc:  # network, missing config, offline mode...
        raise KDCompressError(
            f"could not load {path} ({config}, {split}) from the Hugging Face hub ({type(exc).__name__}); "
            f"pass --data-dir with a local copy laid out like shared/data"
        ) from None


# --- SIB-200 ---------------------------------------------------------------------------

SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")


def _sib_local(task: Task, folder: Path, split: str, lang: str) -> list[Example]:
    rows = _read_tsv(folder / "sib200" / ISO_TO_FLORES[lang] / f"{split}.tsv", header=True)
    return [Example(text, None, task.label_index(category)) for _, category, text in rows]


def _sib_hub(task: Task, split: str, lang: str) -> list[Example]:
    hub_split = {"dev": "validation"}.get(split, split)
    rows = _hub_rows("Davlan/sib200", ISO_TO_FLORES[lang], hub_split)
    return [Example(r["text"], None, task.label_index(r["category"])) for r in rows]


# --- XNLI ----------------------------------------------------------------------------

XNLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_LANGS = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


def _xnli_local(task: Task, folder: Path, split: str, lang: str) -> list[Example]:
    if split == "train":
        if lang != "en":
            raise KDCompressError(
                "xnli has local training data for English only (english_nli/); use --source-lang en"
            )
        # XNLI-en dev/test are not MNLI, so training on MNLI-matched dev + SNLI dev does not leak.
        examples = []
        for name in ("mnli_dev_matched.jsonl", "snli_dev.jsonl"):
            path = folder / "english_nli" / name
            if not path.is_file():
                raise KDCompressError(f"data file {path} is missing; check --data-dir")
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row["label"] in XNLI_LABELS:
                    examples.append(Example(row["premise"], row["hypothesis"], task.label_index(row["label"])))
        return examples
    rows = _read_tsv(folder / "xnli" / f"{split}-{lang}.tsv", header=False)
    return [Example(p, h, task.label_index(label)) for p, h, label in rows]


def _xnli_hub(task: Task, split: str, lang: str) -> list[Example]:
    rows = _hub_rows("facebook/xnli", lang, {"dev": "validation"}.get(split, split))
    return [Example(r["premise"], r["hypothesis"], int(r["label"])) for r in rows]


# --- PAWS-X --------------------------------------------------------------------------

PAWSX_LABELS = ("different", "paraphrase")
PAWSX_LANGS = ("en", "de", "es", "fr", "ja", "ko", "zh")


def _pawsx_local(task: Task, folder: Path, split: str, lang: str) -> list[Example]:
    if split == "train":
        if lang != "en":
            raise KDCompressError("pawsx has local training data for English only; use --source-lang en")
        # No English PAWS-X train split is available offline. English dev is the stand-in; the
        # other languages' dev sets translate the same pairs, so evaluate those on --split test.
        split = "dev"
    path = folder / "pawsx" / f"{split}-{lang}.tsv"
    if split == "test" and not path.is_file():
        raise KDCompressError(
            f"pawsx has labelled local test data for de and zh only, not {lang!r}; use --split dev"
        )
    rows = _read_tsv(path, header=False)
    return [Example(s1, s2, int(label)) for s1, s2, label in rows]


def _pawsx_hub(task: Task, split: str, lang: str) -> list[Example]:
    rows = _hub_rows("google-research-datasets/paws-x", lang, {"dev": "validation"}.get(split, split))
    return [Example(r["sentence1"], r["sentence2"], int(r["label"])) for r in rows]


TASKS: dict[str, Task] = {
    "sib200": Task("sib200", SIB_LABELS, tuple(ISO_TO_FLORES), False,
                   "SIB-200 topic classification (7 labels)", _sib_local, _sib_hub),
    "xnli": Task("xnli", XNLI_LABELS, XNLI_LANGS, True,
                 "XNLI natural language inference (3 labels)", _xnli_local, _xnli_hub),
    "pawsx": Task("pawsx", PAWSX_LABELS, PAWSX_LANGS, True,
                  "PAWS-X paraphrase identification (2 labels)", _pawsx_local, _pawsx_hub),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KDCompressError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


def normalise_lang(task: Task, lang: str) -> str:
    """Accept "de" or SIB-200's "deu_Latn"; return the task's own code."""
    lang = FLORES_TO_ISO.get(lang, lang)
    return task.check_lang(lang)


def resolve_languages(task: Task, source_lang: str, target_langs: str | list[str] | tuple[str, ...] | None,
                      *, default_all: bool = True) -> tuple[str, list[str]]:
    """The one language resolver: (source, targets) in the task's own codes.

    `target_langs` is a list or comma-separated string of "de" / "deu_Latn" codes, or "all"; None or
    empty means every task language but the source when `default_all`, else none. Repeats and the
    source itself are dropped, order is kept.
    """
    from kdcompress.data.languages import parse_lang_list

    source = normalise_lang(task, source_lang)
    chosen = parse_lang_list(target_langs)
    if chosen == ["all"] or (not chosen and default_all):
        chosen = list(task.languages)
    targets = dict.fromkeys(normalise_lang(task, lang) for lang in chosen)
    return source, [lang for lang in targets if lang != source]
