"""Read `kdcompress predict`'s input: .txt, .tsv or .jsonl, from a file or stdin, one row a line.

A row that cannot be used (bad JSON, no text, too many columns, bytes that are not UTF-8) comes
out as a `BadRow` with its line number, never as an exception: one bad line must not cost a long
run. Blank lines are skipped; line numbers always count them, so they match an editor's.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from kdcompress.errors import KDCompressError

FORMATS = ("auto", "txt", "tsv", "jsonl")
_SUFFIXES = {".txt": "txt", ".text": "txt", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class InputRow:
    line: int
    text: str
    text_pair: str | None = None
    id: Any = None  # a .jsonl row's "id", carried to the output


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def input_format(path: str | os.PathLike, given: str = "auto") -> str:
    """txt, tsv or jsonl: `given`, else from the file name's suffix ("-" means: look at the first line)."""
    if given not in FORMATS:
        raise KDCompressError(f"unknown input format {given!r}; choose from {', '.join(FORMATS)}")
    if given != "auto" or str(path) == "-":
        return given
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise KDCompressError(f"cannot tell the format of {path} from its suffix {suffix or '(none)'!r}; name it "
                              ".txt, .tsv or .jsonl, or pass --input-format")
    return _SUFFIXES[suffix]


def _sniff(first: str) -> str:
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if "\t" in first else "txt"


def _parse_tsv(line: int, text: str) -> InputRow | BadRow:
    columns = text.split("\t")
    if len(columns) > 2:
        return BadRow(line, f"{len(columns)} tab-separated columns; a .tsv row is TEXT or TEXT<TAB>PAIR")
    if not columns[0].strip():
        return BadRow(line, "empty text before the tab")
    if len(columns) == 2 and not columns[1].strip():
        return BadRow(line, "empty text after the tab; drop the tab or give the second text")
    return InputRow(line, columns[0], columns[1] if len(columns) == 2 else None)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python's json reads NaN and Infinity; the output must stay JSON


def _parse_jsonl(line: int, text: str) -> InputRow | BadRow:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return BadRow(line, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except ValueError as exc:
        return BadRow(line, f"{exc}; write null or a string")
    if not isinstance(value, dict):
        return BadRow(line, 'not a JSON object; write {"text": ..., "text_pair": ...}')
    if "text" not in value:
        return BadRow(line, 'no "text" field')
    if not isinstance(value["text"], str):
        return BadRow(line, f'"text" is a {type(value["text"]).__name__}, not a string')
    if not value["text"].strip():
        return BadRow(line, '"text" is empty; an empty text has no label')
    pair = value.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        return BadRow(line, f'"text_pair" is a {type(pair).__name__}, not a string')
    if pair is not None and not pair.strip():
        return BadRow(line, '"text_pair" is empty; leave it out or give the second text')
    return InputRow(line, value["text"], pair, value.get("id"))


def parse_lines(lines: Iterable[bytes], fmt: str) -> Iterator[InputRow | BadRow]:
    """Rows from raw lines (bytes, newline included or not); `fmt` "auto" sniffs the first non-blank line."""
    decoded = _decode(lines)
    if fmt == "auto":
        held = []
        for item in decoded:
            held.append(item)
            if isinstance(item[1], str) and item[1].strip():
                break
        first = next((t for _, t in held if isinstance(t, str) and t.strip()), "")
        fmt = _sniff(first)
        decoded = itertools.chain(held, decoded)
    for number, text in decoded:
        if isinstance(text, BadRow):
            yield text
        elif not text.strip():
            continue
        elif fmt == "txt":
            yield InputRow(number, text)
        elif fmt == "tsv":
            yield _parse_tsv(number, text)
        else:
            yield _parse_jsonl(number, text)


def _decode(lines: Iterable[bytes]) -> Iterator[tuple[int, str | BadRow]]:
    for number, raw in enumerate(lines, start=1):
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, BadRow(number, f"not UTF-8 text (byte {exc.start + 1}); save the file as UTF-8")


def open_input(path: str | os.PathLike) -> IO[bytes]:
    """The input as a binary stream: stdin for "-", else the file (one clear line if it is missing)."""
    if str(path) == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise KDCompressError("--input - reads stdin, which is closed; pipe the texts in or pass --input FILE")
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise KDCompressError(f"input file {path} not found; check --input") from None
    except IsADirectoryError:
        raise KDCompressError(f"input {path} is a directory; pass a .txt, .tsv or .jsonl file") from None


def read_inputs(path: str | os.PathLike = "-", *, fmt: str = "auto") -> Iterator[InputRow | BadRow]:
    """InputRows and BadRows from a .txt (one text a line), .tsv (TEXT<TAB>PAIR) or .jsonl
    ({"text": ..., "text_pair": ..., "id": ...}) file, or from stdin ("-", format sniffed).

    A missing file or an unknown suffix raises here, before the first row is read."""
    fmt = input_format(path, fmt)
    return _rows(open_input(path), fmt)


def _rows(stream: IO[bytes], fmt: str) -> Iterator[InputRow | BadRow]:
    try:
        yield from parse_lines(stream, fmt)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
