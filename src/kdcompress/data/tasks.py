"""The task registry: labels, languages and `load(split, lang)` from a local folder or the hub.

A local folder is laid out like ../shared/data (see its README). Where no folder is given
and $KDCOMPRESS_DATA_DIR is unset, tasks load from the Hugging Face hub with `datasets`,
which is what users with network access run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from kdcompress.data.languages import FLORES_TO_ISO, ISO_TO_FLORES
from kdcompress.errors import KDCompressError, describe

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


def _read_text(path: Path) -> str:
    """A data file's text, strictly UTF-8 (a leading byte-order mark is dropped)."""
    if not path.is_file():
        raise KDCompressError(f"data file {path} is missing; check --data-dir (it must be laid out like shared/data)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KDCompressError(f"cannot read data file {path} ({describe(exc)}); check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise KDCompressError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                              "re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _tab_names(columns: tuple[str, ...]) -> str:
    return "<TAB>".join(columns)


def unquote_field(field: str) -> str:
    """A field that pandas wrapped in quotes (its inner quotes doubled) as its text; any other field as it is."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def tsv_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every line, split at tabs without quote processing: one line is always one row.

    A CSV reader with quoting lets a text that starts with an unclosed quote swallow every following line into one
    field, silently dropping rows; split here, a bad row can only fail its own column check."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        yield number, (line.split("\t") if line.strip() else [])


def _read_tsv(path: Path, *, columns: tuple[str, ...], header: bool,
              unquote: bool = False) -> list[tuple[str, list[str]]]:
    """The rows of a tab-separated file as (where, fields), where = "<path>, line <n>" for error messages.

    Every line is one row (no quote processing): every row must have exactly len(columns) fields, none of them
    empty; blank lines are skipped. With `header`, the first line must be the column names (a missing header is
    an error, never a lost row). SIB-200's files were written by pandas with CSV quoting (a text holding quotes is
    wrapped in quotes, inner ones doubled): `unquote` turns such fields back into their text. XNLI and PAWS-X carry
    raw quotes.
    """
    text = _read_text(path)
    rows: list[tuple[str, list[str]]] = []
    expect_header = header
    for number, row in tsv_lines(text):
        where = f"{path}, line {number}"
        if unquote:
            row = [unquote_field(field) for field in row]
        if not row:
            continue
        if expect_header:
            expect_header = False
            if [field.strip() for field in row] != list(columns):
                found = f"header is {_tab_names(tuple(row))!r}"
                if len(row) == len(columns):  # a data row: the header line is missing
                    raise KDCompressError(f"{where}: missing the header line; the file must start with the line "
                                          f"{_tab_names(columns)!r} (add it as the first line)")
                raise KDCompressError(f"{where}: {found}; the file must start with the line {_tab_names(columns)!r}")
            continue
        if len(row) != len(columns):
            raise KDCompressError(
                f"{where}: {len(row)} tab-separated fields where {len(columns)} ({_tab_names(columns)}) were expected; "
                f"remove the stray tab{'s' if len(row) > len(columns) + 1 else ''} or fix the row"
                if len(row) > len(columns) else
                f"{where}: {len(row)} tab-separated field{'s' if len(row) != 1 else ''} where {len(columns)} "
                f"({_tab_names(columns)}) were expected; fix the row or delete it")
        empty = [name for name, field in zip(columns, row) if not field.strip()]
        if empty:
            raise KDCompressError(f"{where}: empty {', '.join(empty)}; fill it in or delete the row")
        rows.append((where, row))
    if not rows:
        if expect_header:
            raise KDCompressError(f"{path} is empty; it must start with the line {_tab_names(columns)!r}, then one "
                                  "example a line: restore it from the dataset")
        raise KDCompressError(f"{path} holds no examples; restore it from the dataset")
    return rows


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

    def label_index(self, label: str, *, where: str | None = None) -> int:
        """The index of a label name; `where` ("<file>, line <n>") places an unknown one in the error."""
        try:
            return self.labels.index(label)
        except ValueError:
            if where:
                raise KDCompressError(f"{where}: unknown {self.name} label {label!r}; expected one of "
                                      f"{', '.join(self.labels)} (fix or delete that row)") from None
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
SIB_COLUMNS = ("index_id", "category", "text")  # the header line every local SIB-200 file starts with


def _sib_local(task: Task, folder: Path, split: str, lang: str) -> list[Example]:
    rows = _read_tsv(folder / "sib200" / ISO_TO_FLORES[lang] / f"{split}.tsv", columns=SIB_COLUMNS, header=True,
                     unquote=True)
    return [Example(text, None, task.label_index(category, where=where)) for where, (_, category, text) in rows]


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
            examples.extend(_read_nli_jsonl(task, folder / "english_nli" / name))
        return examples
    path = folder / "xnli" / f"{split}-{lang}.tsv"
    rows = _read_tsv(path, columns=XNLI_COLUMNS, header=False)
    return [Example(p, h, _headerless_label(task, label, where, line_one=i == 0)) for i, (where, (p, h, label))
            in enumerate(rows)]


XNLI_COLUMNS = ("premise", "hypothesis", "label")
NLI_NO_GOLD_LABEL = "-"  # SNLI's mark for pairs whose annotators did not agree: not an example


def _read_nli_jsonl(task: Task, path: Path) -> list[Example]:
    """English NLI training pairs, one JSON object {"premise", "hypothesis", "label"} a line."""
    examples = []
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KDCompressError(f"{where}: not a JSON object ({exc.msg}); fix or delete that line") from None
        missing = [key for key in XNLI_COLUMNS if not isinstance(row, dict) or not isinstance(row.get(key), str)]
        if missing:
            raise KDCompressError(f"{where}: no text for {', '.join(missing)}; each line must be a JSON object with "
                                  "string fields premise, hypothesis and label")
        if row["label"] == NLI_NO_GOLD_LABEL:
            continue
        examples.append(Example(row["premise"], row["hypothesis"], task.label_index(row["label"], where=where)))
    return examples


def _headerless_label(task: Task, value: str, where: str, *, line_one: bool) -> int:
    """The label of a row in a file without a header (XNLI, PAWS-X): a name, or for PAWS-X 0/1."""
    value = value.strip()
    if task.name == "pawsx":
        index = int(value) if value.isdigit() else -1
        if 0 <= index < task.num_labels:
            return index
        expected = ", ".join(str(i) for i in range(task.num_labels))
    else:
        if value in task.labels:
            return task.labels.index(value)
        expected = ", ".join(task.labels)
    hint = f" ({task.name} files have no header line: delete it)" if line_one else " (fix or delete that row)"
    raise KDCompressError(f"{where}: unknown {task.name} label {value!r}; expected one of {expected}{hint}")


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
    rows = _read_tsv(path, columns=PAWSX_COLUMNS, header=False)
    return [Example(s1, s2, _headerless_label(task, label, where, line_one=i == 0))
            for i, (where, (s1, s2, label)) in enumerate(rows)]


PAWSX_COLUMNS = ("sentence1", "sentence2", "label")


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
