"""Where `kdcompress corpus` finds text in the data folder, and how it reads each kind of file.

Discovery yields train/dev sources only; test files are listed separately, for decontamination.
See corpus_builder.py for what is read per language and why.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from kdcompress.data.languages import FLORES_TO_ISO
from kdcompress.data.tasks import tsv_lines, unquote_field
from kdcompress.data.ud_reader import conllu_sentences, udpos_sentences
from kdcompress.errors import KDCompressError

FAMILIES = ("sib200", "xnli", "english_nli", "pawsx", "ud", "udpos_xtreme")

_TEST_PART = re.compile(r"(^|[^a-z])test([^a-z]|$)")
_UD_FILE = re.compile(r"^(?P<lang>[a-z]{2,3})_[a-z0-9]+-ud-(?P<split>train|dev|test)\.conllu$")
_SPLIT_LANG = re.compile(r"^(?P<split>train|dev)-(?P<lang>[A-Za-z_]+)\.tsv$")


@dataclass(frozen=True)
class Source:
    name: str  # manifest name, e.g. "sib200/train", "ud/UD_German-GSD/dev"
    family: str
    lang: str
    path: Path
    read: Callable[[Path], Iterable[str]] = field(repr=False, compare=False)


# --- keys ------------------------------------------------------------------------------------

def clean(text: str) -> str:
    """One line of output: runs of whitespace (newlines and tabs included) become one space."""
    return " ".join(text.split())


def sentence_key(text: str) -> str:
    """What 'the same sentence' means for deduplication and decontamination: NFC, whitespace removed."""
    return unicodedata.normalize("NFC", "".join(text.split()))


def match_key(text: str) -> str:
    """What 'the same sentence' means for decontamination and deduplication: NFKC, case-folded, letters, marks and
    digits only. A test sentence that differs from a corpus line only in case, punctuation, quote marks, spacing or
    compatibility forms (full-width letters, ligatures) still counts as the same sentence and is kept out."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(char for char in folded if unicodedata.category(char)[0] in "LMN")


def unreadable_paths(root: Path, skip: Path | None = None) -> list[Path]:
    """Folders and files under `root` (hidden ones and `skip` aside) that this process may not read: a silently
    skipped folder would drop its text from the corpus and, worse, its test files from decontamination."""
    found: list[Path] = []

    def note(error: OSError) -> None:
        found.append(Path(error.filename))

    for folder, dirs, files in os.walk(root, onerror=note):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (skip is None or here / d != skip)]
        for name in dirs:
            if not os.access(here / name, os.R_OK | os.X_OK):
                found.append(here / name)
        found.extend(here / name for name in files
                     if not name.startswith(".") and not os.access(here / name, os.R_OK))
    return sorted(set(found))


def text_width(key: str) -> int:
    """Length for `min_chars`: a wide East Asian character carries about two Latin letters' worth of text."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in key)


def is_test_path(relative: Path) -> bool:
    return any(_TEST_PART.search(part.lower()) for part in relative.parts)


# --- readers ---------------------------------------------------------------------------------

def _tsv_rows(path: Path, *, quoted: bool = False) -> Iterator[list[str]]:
    """Rows of a TSV file. XNLI and PAWS-X are raw (`quoted=False`); SIB-200 was written by pandas, with
    CSV quoting: a text holding a quote is wrapped in quotes and its quotes doubled."""
    text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    for _, row in tsv_lines(text):  # one line, one row: an unclosed quote must not swallow the lines after it
        if row:
            yield [unquote_field(field) for field in row] if quoted else row


def _unquote(field: str) -> str | None:
    """The text of a CSV-quoted field that was read raw (outer quotes dropped, doubled quotes halved), else None."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return None


def _tsv_columns(*columns: int) -> Callable[[Path], Iterator[str]]:
    def read(path: Path) -> Iterator[str]:
        for row in _tsv_rows(path):
            for column in columns:
                if column < len(row):
                    yield row[column]
    return read


def _sib_text(path: Path) -> Iterator[str]:
    rows = _tsv_rows(path, quoted=True)
    header = next(rows, [])
    column = header.index("text") if "text" in header else len(header) - 1
    for row in rows:
        if column < len(row):
            yield row[column]


def _jsonl_fields(*names: str) -> Callable[[Path], Iterator[str]]:
    def read(path: Path) -> Iterator[str]:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise KDCompressError(f"{path} line {number} is not JSON; fix or remove the file") from None
                for name in names:
                    if isinstance(row.get(name), str):
                        yield row[name]
    return read


def any_text(path: Path) -> Iterator[str]:
    """Every piece of text of a test file, whatever its task: all TSV fields, JSON strings, UD sentences."""
    if path.suffix == ".conllu":
        yield from conllu_sentences(path)
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    yield from (value for value in row.values() if isinstance(value, str))
    else:
        for row in _tsv_rows(path):  # read raw, and CSV-quoted fields also as their text (SIB-200)
            for item in row:
                yield item
                unquoted = _unquote(item)
                if unquoted is not None:
                    yield unquoted


# --- what the folder holds --------------------------------------------------------------------

def iso_code(code: str) -> str:
    return FLORES_TO_ISO.get(code, code)


def discover(root: Path) -> list[Source]:
    """Every train/dev source under `root`, in the order the table of the module docstring gives."""
    sources: list[Source] = []
    sib = root / "sib200"
    if sib.is_dir():
        for folder in sorted(p for p in sib.iterdir() if p.is_dir()):
            for split in ("train", "dev"):
                path = folder / f"{split}.tsv"
                if path.is_file():
                    sources.append(Source(f"sib200/{split}", "sib200", iso_code(folder.name), path, _sib_text))
    for family in ("xnli", "pawsx"):
        folder = root / family
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.tsv")):
            match = _SPLIT_LANG.match(path.name)
            if match:
                sources.append(Source(f"{family}/{match['split']}", family, iso_code(match["lang"]), path,
                                       _tsv_columns(0, 1)))
    nli = root / "english_nli"
    if nli.is_dir():
        for path in sorted(nli.glob("*.jsonl")):
            if not is_test_path(path.relative_to(root)):
                sources.append(Source(f"english_nli/{path.stem}", "english_nli", "en", path,
                                       _jsonl_fields("premise", "hypothesis")))
    ud = root / "ud"
    if ud.is_dir():
        for path in sorted(ud.glob("*/*.conllu")):
            match = _UD_FILE.match(path.name)
            if match and match["split"] != "test":
                sources.append(Source(f"ud/{path.parent.name}/{match['split']}", "ud", match["lang"], path,
                                       conllu_sentences))
    udpos = root / "udpos_xtreme"
    if udpos.is_dir():
        for path in sorted(udpos.glob("*.tsv")):
            match = _SPLIT_LANG.match(path.name)
            if match:
                lang = iso_code(match["lang"])
                sources.append(Source(f"udpos_xtreme/{match['split']}", "udpos_xtreme", lang, path,
                                       lambda p, lang=lang: udpos_sentences(p, lang)))
    return sources


def test_files(root: Path, skip: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (path.is_file() and is_test_path(relative) and path.suffix in (".tsv", ".txt", ".jsonl", ".conllu")
                and not any(part.startswith(".") for part in relative.parts)
                and skip not in path.resolve().parents):
            found.append(path)
    return found


def guard_not_test(path: Path, root: Path) -> None:
    if is_test_path(path.relative_to(root)):  # discovery never yields one; this keeps it that way
        raise AssertionError(f"refusing to read test split {path} for corpus text")
