"""Sentences of Universal Dependencies files as plain text.

- CoNLL-U (`ud/UD_*/*.conllu`): the `# text = ...` comment of each sentence, which is the raw
  sentence as the treebank's authors wrote it. Where a sentence has no such comment (the
  Vietnamese-VTB test file, for one), it is rebuilt from the surface tokens: multiword tokens
  (`1-2  Am`) are taken whole instead of their syntactic words (`An dem`), and `SpaceAfter=No` in
  the MISC column joins a token to the next.
- XTREME's UD-POS TSV (`udpos_xtreme/*.tsv`, `word TAB tag`, blank line between sentences): only the
  words survive, so the text is rebuilt: words joined by spaces, no space before closing
  punctuation or after opening brackets, and no spaces at all for scripts written without them
  (Chinese, Japanese, Thai). Multiword tokens cannot be restored ("zu dem" stays two words), which
  is why the corpus builder prefers CoNLL-U text where a language has a treebank (see corpus_builder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

_TEXT_COMMENT = re.compile(r"^#\s*text\s*=\s?(.*)$")  # not text_en, text_orig, ...
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}»…、。，．！？：；）」』】]+)(?= |$)")
_NO_SPACE_AFTER = re.compile(r"(^| )([(\[{«（「『【]) ")

#: Languages written without spaces between words: their tokens are concatenated.
UNSPACED_LANGS = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "lzh", "wuu"})


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n").rstrip("\r")


def conllu_sentences(path: str | Path) -> Iterator[str]:
    """The text of each sentence of a CoNLL-U file, in file order (see the module docstring)."""
    text: str | None = None
    tokens: list[str] = []
    covered_to = 0  # last word id inside the current multiword token

    def finish() -> str | None:
        if text is not None:
            return text
        return "".join(tokens).strip() if tokens else None

    for line in _lines(Path(path)):
        if not line.strip():
            sentence = finish()
            if sentence:
                yield sentence
            text, tokens, covered_to = None, [], 0
            continue
        if line.startswith("#"):
            match = _TEXT_COMMENT.match(line)
            if match:
                text = match.group(1).strip()
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            continue
        ident, form = columns[0], columns[1]
        misc = columns[9] if len(columns) > 9 else "_"
        if "." in ident:  # empty node of enhanced dependencies: no surface form
            continue
        if "-" in ident:  # multiword token: its form is the surface text of the words it spans
            start, _, end = ident.partition("-")
            covered_to = int(end) if end.isdigit() else covered_to
        elif ident.isdigit() and int(ident) <= covered_to:
            continue
        space = "" if "SpaceAfter=No" in misc.split("|") else " "
        tokens.append(form + space)
    sentence = finish()
    if sentence:
        yield sentence


def join_words(words: list[str], lang: str) -> str:
    """Words of a tokenised sentence as readable text (see the module docstring)."""
    if lang in UNSPACED_LANGS:
        return "".join(words)
    text = " ".join(words)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    return _NO_SPACE_AFTER.sub(r"\1\2", text)


def udpos_sentences(path: str | Path, lang: str) -> Iterator[str]:
    """Sentences of an XTREME UD-POS TSV file (`word TAB tag`, blank line between sentences), rebuilt as text."""
    words: list[str] = []
    for line in _lines(Path(path)):
        if not line.strip():
            if words:
                yield join_words(words, lang)
            words = []
            continue
        word = line.split("\t", 1)[0]
        if word.strip():
            words.append(word.strip())
    if words:
        yield join_words(words, lang)
