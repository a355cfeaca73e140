"""`kdcompress corpus`: every unlabeled sentence of the local data folder, decontaminated, deduplicated and
balanced per language, as a folder of `<lang>.txt` files (one sentence a line) and `manifest.json`.

The folder is a pretraining-KD corpus as it stands (`--corpus DIR`: corpus.py reads a folder of *.txt).

What is read, per language (ISO codes; SIB-200's `deu_Latn` folders count as `de`):

| source (manifest name)           | text                                                            |
|----------------------------------|-----------------------------------------------------------------|
| `sib200/train`, `sib200/dev`     | the `text` column                                               |
| `xnli/dev` (and `xnli/train`)    | premise and hypothesis, each a line                             |
| `english_nli/<file>`             | premise and hypothesis of every `*.jsonl` (MNLI, SNLI dev): en  |
| `pawsx/dev` (and `pawsx/train`)  | both sentences                                                  |
| `ud/<treebank>/dev`, `/train`    | each sentence's `# text =` line (rebuilt from tokens if absent) |
| `udpos_xtreme/dev`, `/train`     | words joined back into text; by default only for languages that |
|                                  | have no train/dev treebank under `ud/` (`udpos="fallback"`)     |

Why udpos_xtreme is a fallback: its files keep the syntactic words only, so "zum" comes back as
"zu dem" and Vietnamese words lose their inner spaces ("hảiquân"); a treebank's `# text` is the
sentence as written. Where a language has no treebank here (ar, fi, he, hi, id, it, nl, pl, pt, ta,
te, ...), rebuilt text is better than none. `udpos="always"` reads it for every language (much more
German and Russian text), `"never"` not at all.

Test splits are never read for their text. Every file under the data folder whose path has a
`test` component (`test.tsv`, `test-de.tsv`, `test_unlabeled/`, `*-ud-test.conllu`, ...) is read only
into a decontamination set, whatever task or treebank it belongs to, and any gathered sentence that
appears there is dropped. Sentences are compared by `match_key`: NFKC, case-folded, letters, marks and digits
only, so a tokenised copy ("Hello , world .") and a copy with other case, punctuation or quote marks ("hello world")
match the raw form ("Hello, world."); the same key deduplicates within a language (the first occurrence, in the
table's order, is kept). An unreadable folder or file under the data folder is refused, never skipped.

Each gathered line goes to exactly one count of its source: `too_short` (empty, or under `min_chars`
characters, whitespace excluded and wide CJK/kana/hangul characters counted twice),
`contaminated`, `duplicates`, `over_cap` (left out by the per-language cap) or `kept`, and these add
up to `read`. The kept sentences of a language are a seeded random choice among its unique ones,
written in a seeded random order, so any prefix of `<lang>.txt` is itself a uniform sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kdcompress.data.languages import parse_lang_list
from kdcompress.data.tasks import DATA_DIR_ENV, TASKS
from kdcompress.data.corpus_sources import (FAMILIES, Source, any_text, clean, discover, guard_not_test, is_test_path,
                                            iso_code, match_key, sentence_key, test_files, text_width,
                                            unreadable_paths)
from kdcompress.errors import KDCompressError
from kdcompress.io import atomic_output_dir, check_writable_output, write_json_atomic
from kdcompress.settings import Settings, build, setting

UDPOS_MODES = ("fallback", "always", "never")
MANIFEST = "manifest.json"
COUNTS = ("read", "too_short", "contaminated", "duplicates", "over_cap", "kept")


@dataclass
class CorpusConfig(Settings):
    table = "corpus"

    data_dir: str | None = setting(None, help="Local data folder laid out like shared/data "
                                   f"(default: ${DATA_DIR_ENV}).")
    langs: list[str] = setting(factory=lambda: ["all"], help="Comma-separated ISO codes (de, sw; FLORES codes such "
                               "as deu_Latn work too), a task name for its languages (sib200, xnli, pawsx), or "
                               "'all' for every language the data folder has text for.")
    out: str = setting("", help="Output directory: <lang>.txt files and manifest.json; must not exist "
                       "(see --overwrite).")
    max_per_lang: int = setting(10000, help="Most sentences kept per language (a seeded random choice); 0 for no cap.")
    max_total: int = setting(0, help="Most sentences in all, shared equally between the languages (a language "
                             "with fewer leaves its share to the others); 0 for no total cap.")
    min_chars: int = setting(10, help="Drop lines shorter than this many characters, whitespace excluded and "
                             "a wide (CJK, kana, hangul) character counted twice.")
    udpos: str = setting("fallback", help="Text rebuilt from udpos_xtreme's words: fallback (only for languages "
                         "without a UD treebank under ud/) | always | never.")
    exclude: list[str] = setting(factory=list, help="Sources to leave out: families (sib200, xnli, english_nli, "
                                 "pawsx, ud, udpos_xtreme) or manifest names such as sib200/dev. E.g. "
                                 "'sib200' for generic text that does not translate SIB-200's training sentences.")
    seed: int = setting(0, help="Seed of the per-language random choice and order.")
    overwrite: bool = setting(False, help="Replace OUT if it exists.")
    progress: bool = setting(True, help="Show a progress bar while reading.", cli=False)

    def check(self) -> "CorpusConfig":
        if not self.out:
            raise KDCompressError("no output directory: pass --out DIR")
        if not parse_lang_list(self.langs):
            raise KDCompressError("no languages: pass --langs, e.g. en,de,sw or sib200 or all")
        for name in ("max_per_lang", "max_total", "min_chars"):
            if getattr(self, name) < 0:
                raise KDCompressError(f"--{name.replace('_', '-')} must be 0 or more, not {getattr(self, name)}")
        if self.udpos not in UDPOS_MODES:
            raise KDCompressError(f"--udpos {self.udpos!r} is not one of {', '.join(UDPOS_MODES)}")
        for item in self.exclude:
            if item.split("/")[0] not in FAMILIES:
                raise KDCompressError(f"--exclude {item!r} names no source; use one of {', '.join(FAMILIES)} "
                                      "or a manifest name such as sib200/dev")
        return self


@dataclass
class CorpusResult:
    """What `build_corpus` wrote: the folder, kept sentences per language and the manifest."""

    out: Path
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def files(self) -> dict[str, Path]:
        return {lang: self.out / f"{lang}.txt" for lang in self.counts}

    def summary(self) -> str:
        """One line for the terminal: what was kept, what was left out and why, where the details are."""
        totals = self.manifest["totals"]
        fewest = min(self.counts, key=self.counts.get)
        return (f"corpus: {totals['kept']:,} sentences in {totals['languages']} languages ({totals['kept_min']:,} "
                f"({fewest}) to {totals['kept_max']:,} a language) in {self.out}; left out: {totals['contaminated']:,} "
                f"sharing text with a test split, {totals['duplicates']:,} duplicates, {totals['too_short']:,} too "
                f"short, {totals['over_cap']:,} over the caps. Per source: {self.out / MANIFEST}")


def _select(sources: list[Source], langs: list[str], cfg: CorpusConfig) -> list[Source]:
    treebank_langs = {s.lang for s in sources if s.family == "ud"}
    chosen = []
    for source in sources:
        if source.lang not in langs or source.family in cfg.exclude or source.name in cfg.exclude:
            continue
        if source.family == "udpos_xtreme" and (
                cfg.udpos == "never" or (cfg.udpos == "fallback" and source.lang in treebank_langs)):
            continue
        chosen.append(source)
    return chosen


def _resolve_langs(requested: list[str], available: list[str]) -> list[str]:
    langs: dict[str, None] = {}
    for item in parse_lang_list(requested):
        if item == "all":
            langs.update(dict.fromkeys(available))
        elif item in TASKS:
            langs.update(dict.fromkeys(TASKS[item].languages))
        else:
            langs[iso_code(item)] = None
    return list(langs)


# --- building ---------------------------------------------------------------------------------

def _quotas(available: dict[str, int], per_lang: int, total: int) -> dict[str, int]:
    """Sentences to keep per language: at most `per_lang` each, `total` in all shared equally (water-filling)."""
    caps = {lang: min(n, per_lang) if per_lang else n for lang, n in available.items()}
    if not total or sum(caps.values()) <= total:
        return caps
    quotas, left, budget = {}, dict(caps), total
    while left:
        share = budget // len(left)
        small = {lang: n for lang, n in left.items() if n <= share}
        if not small:
            extra = budget - share * len(left)  # the remainder, one each, in language order
            for index, lang in enumerate(left):
                quotas[lang] = share + (1 if index < extra else 0)
            break
        for lang, n in small.items():
            quotas[lang] = n
            budget -= n
            del left[lang]
    return {lang: quotas[lang] for lang in available}


def _progress(enabled: bool):
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeElapsedColumn

    from kdcompress.console import stderr_console
    from kdcompress.progress import Progress

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                    console=stderr_console(), transient=True, disable=not enabled)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_corpus(config: CorpusConfig | None = None, **overrides: Any) -> CorpusResult:
    """Gather, decontaminate, deduplicate and balance every local unlabeled sentence (see the module docstring)."""
    cfg = build(CorpusConfig, config, overrides)
    root = _data_root(cfg.data_dir)
    out = check_writable_output(cfg.out, cfg.overwrite, inputs=[root])  # before any reading
    unreadable = unreadable_paths(root, skip=out.resolve())
    if unreadable:
        raise KDCompressError(f"cannot read {unreadable[0]} in the data folder"
                              f"{f' (and {len(unreadable) - 1} more)' if len(unreadable) > 1 else ''}: its text and "
                              "test files would drop out of the corpus and of decontamination; make it readable "
                              "(chmod) or remove it")

    discovered = discover(root)
    if not discovered:
        raise KDCompressError(f"data folder {root} holds no train/dev text ({', '.join(FAMILIES)}); pass --data-dir "
                              "pointing to a folder laid out like shared/data")
    _refuse_unmatched_excludes(cfg.exclude, discovered)
    available = sorted({s.lang for s in discovered})
    langs = _resolve_langs(cfg.langs, available)
    sources = _select(discovered, langs, cfg)
    tests = test_files(root, skip=out.resolve())

    stats: dict[str, dict[str, dict[str, int]]] = {lang: {} for lang in langs}
    unique: dict[str, dict[str, tuple[str, str]]] = {lang: {} for lang in langs}  # key -> (text, source)
    contaminating: set[str] = set()
    test_report = []
    with _progress(cfg.progress) as bar:
        task = bar.add_task("reading", total=sum(p.stat().st_size for p in [*tests, *(s.path for s in sources)]))
        for path in tests:
            bar.update(task, description=f"test (decontamination) {path.relative_to(root)}")
            before = len(contaminating)
            with _utf8_or_error(path, None):
                contaminating.update(k for k in map(match_key, any_text(path)) if k)
            test_report.append({"path": str(path.relative_to(root)), "new_keys": len(contaminating) - before})
            bar.advance(task, path.stat().st_size)
        for source in sources:
            bar.update(task, description=f"{source.lang}: {source.path.relative_to(root)}")
            guard_not_test(source.path, root)
            counts = stats[source.lang].setdefault(source.name, dict.fromkeys(COUNTS, 0))
            seen = unique[source.lang]
            with _utf8_or_error(source.path, source.name):
                for raw in source.read(source.path):
                    counts["read"] += 1
                    text = clean(raw)
                    key = match_key(text)
                    if not key or text_width(sentence_key(text)) < cfg.min_chars:
                        counts["too_short"] += 1
                    elif key in contaminating:
                        counts["contaminated"] += 1
                    elif key in seen:
                        counts["duplicates"] += 1
                    else:
                        seen[key] = (text, source.name)
            bar.advance(task, source.path.stat().st_size)

    empty = [lang for lang in langs if not unique[lang]]
    if empty:
        raise KDCompressError(
            f"no usable text for language(s) {', '.join(empty)} in {root} (after dropping test-split text, "
            f"duplicates and lines under {cfg.min_chars} characters); drop them from --langs "
            f"(languages with text: {', '.join(available)})")

    quotas = _quotas({lang: len(unique[lang]) for lang in langs}, cfg.max_per_lang, cfg.max_total)
    chosen: dict[str, list[tuple[str, str]]] = {}
    for lang in langs:
        rng = random.Random(f"{cfg.seed}:{lang}")
        chosen[lang] = rng.sample(list(unique[lang].values()), quotas[lang])  # a random choice in random order
        for _, name in chosen[lang]:
            stats[lang][name]["kept"] += 1
        for name, counts in stats[lang].items():
            unique_here = sum(1 for _, source in unique[lang].values() if source == name)
            counts["over_cap"] = unique_here - counts["kept"]

    manifest = _manifest(cfg, root, langs, stats, quotas, {lang: len(unique[lang]) for lang in langs},
                         test_report, len(contaminating))
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp:
        for lang in langs:
            path = tmp / f"{lang}.txt"
            path.write_text("".join(text + "\n" for text, _ in chosen[lang]), encoding="utf-8")
            manifest["languages"][lang]["file"] = path.name
            manifest["languages"][lang]["sha256"] = _sha256(path)
        write_json_atomic(tmp / MANIFEST, manifest)
    return CorpusResult(out=out, counts={lang: len(chosen[lang]) for lang in langs}, manifest=manifest)


def _refuse_unmatched_excludes(exclude: list[str], discovered: list) -> None:
    """An --exclude that names no source of this folder excludes nothing: most likely a typo, so say so."""
    names = {s.name for s in discovered} | {s.family for s in discovered}
    unmatched = [item for item in exclude if item not in names]
    if unmatched:
        shown = ", ".join(sorted({s.family for s in discovered}) + sorted({s.name for s in discovered})[:8])
        raise KDCompressError(f"--exclude {unmatched[0]!r} matches no source in this data folder, so it would "
                              f"exclude nothing; use a family or manifest name it holds ({shown}, ...)")


@contextlib.contextmanager
def _utf8_or_error(path: Path, source_name: str | None):
    try:
        yield
    except UnicodeDecodeError:
        leave_out = f", or leave it out with --exclude {source_name}" if source_name else ""
        raise KDCompressError(f"{path}: not UTF-8 text; re-save it as UTF-8{leave_out}") from None


def _data_root(data_dir: str | None) -> Path:
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV)
    if not value:
        raise KDCompressError(f"no data folder: pass --data-dir pointing to a folder laid out like shared/data "
                              f"(or set ${DATA_DIR_ENV})")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise KDCompressError(f"data folder {root} does not exist; pass --data-dir pointing to a folder laid out "
                              "like shared/data")
    return root



def _total(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    total = dict.fromkeys(COUNTS, 0)
    for row in rows:
        for name in COUNTS:
            total[name] += row[name]
    return total


def _manifest(cfg: CorpusConfig, root: Path, langs: list[str], stats, quotas, unique_counts, test_report,
              test_keys: int) -> dict[str, Any]:
    languages = {}
    by_source: dict[str, list[dict[str, int]]] = {}
    for lang in langs:
        languages[lang] = {**_total(stats[lang].values()), "unique": unique_counts[lang], "quota": quotas[lang],
                           "sources": stats[lang]}
        for name, counts in stats[lang].items():
            by_source.setdefault(name, []).append(counts)
    kept = [languages[lang]["kept"] for lang in langs]
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "overwrite")}
    return {
        "kind": "kdcompress-corpus",
        "version": 1,
        "settings": {**settings, "data_dir": str(root)},
        "langs": langs,
        "totals": {**_total(languages[lang] for lang in langs), "languages": len(langs),
                   "kept_min": min(kept), "kept_median": statistics.median(kept), "kept_max": max(kept)},
        "sources": {name: _total(rows) for name, rows in by_source.items()},
        "languages": languages,
        "decontamination": {"rule": "a gathered line is dropped when its text, NFKC-normalised and case-folded "
                                    "with everything but letters, marks and digits removed, equals any text of "
                                    "any test file so normalised",
                            "test_files": test_report, "test_keys": test_keys},
        "counts": {name: {"read": "lines gathered",
                          "too_short": f"empty or under {cfg.min_chars} characters (wide count 2)",
                          "contaminated": "found in a test split", "duplicates": "seen before in this language",
                          "over_cap": "unique but left out by the cap", "kept": "written"}[name]
                   for name in COUNTS},
    }


__all__ = ["CorpusConfig", "CorpusResult", "build_corpus", "clean", "sentence_key", "is_test_path"]
