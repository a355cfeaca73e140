"""Unlabeled multilingual text for KD during pretraining.

Sources (any mix, given as strings so they fit a command line or a config file):
- "task": the text of the task's train and dev splits in the chosen languages (labels dropped;
  the test split is never read); "task:train": the train split only, for runs whose settings are
  chosen on the dev split (the dev text must then stay unseen);
- a path to a text file (one sentence a line) or a folder of *.txt files; a folder made by
  `kdcompress corpus` (it has manifest.json) gives each chosen language an equal share;
- "hub:DATASET[:CONFIG[:SPLIT]]": a hub dataset with a "text" column, streamed (e.g.
  "hub:wikimedia/wikipedia:20231101.de"), for users who have the hub.
"""

from __future__ import annotations

import random
from pathlib import Path

from kdcompress.console import stderr_console
from kdcompress.data.tasks import Task
from kdcompress.errors import KDCompressError


# The task's own text, by corpus spec: which unlabeled splits each reads.
TASK_SPLITS = {"task": ("train", "dev"), "task:train": ("train",)}


def task_only_splits(specs: list[str]) -> tuple[str, ...] | None:
    """The splits a corpus made only of the task's own text reads, or None if it holds other text."""
    return TASK_SPLITS[specs[0]] if len(specs) == 1 and specs[0] in TASK_SPLITS else None


def _task_text(task: Task, langs: list[str], data_dir, splits: tuple[str, ...]) -> list[str]:
    texts = []
    for lang in langs:
        for split in splits:
            try:
                examples = task.load(split, lang, data_dir=data_dir)
            except KDCompressError:
                continue  # e.g. XNLI has local training data for English only
            for ex in examples:
                texts.append(ex.text)
                if ex.text_pair:
                    texts.append(ex.text_pair)
    return texts


def _file_text(path: Path) -> list[str]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise KDCompressError(f"corpus folder {path} holds no .txt files; give files with one sentence a line")
    lines = []
    for file in files:
        try:
            lines.extend(line.strip() for line in file.read_text(encoding="utf-8").splitlines())
        except UnicodeDecodeError:
            raise KDCompressError(f"corpus file {file} is not UTF-8 text; convert it or leave it out") from None
    return [line for line in lines if line]


def _built_corpus_text(path: Path, langs: list[str], max_sentences: int) -> list[str]:
    """Balanced text from a `kdcompress corpus` folder: an equal share per language, a short language's
    unused share going to the others. Each <lang>.txt is already in random order, so a prefix is a fair sample."""
    from kdcompress.data.languages import FLORES_TO_ISO

    per_lang = {}
    for lang in langs:
        file = path / f"{FLORES_TO_ISO.get(lang, lang)}.txt"
        if file.is_file():
            per_lang[lang] = _file_text(file)
    missing = [lang for lang in langs if not per_lang.get(lang)]
    if len(missing) == len(langs):
        raise KDCompressError(f"corpus {path} has no text for any of the languages {', '.join(langs)}; rebuild it "
                              "with `kdcompress corpus --langs` naming them")
    if missing:  # generic text does not exist for every language; say so rather than fail the run
        stderr_console().print(f"[yellow]note[/]: corpus {path} has no text for {', '.join(missing)}; "
                               "they get none from it")
    per_lang = {lang: texts for lang, texts in per_lang.items() if texts}
    chosen: list[str] = []
    remaining, budget = sorted(per_lang, key=lambda lang: len(per_lang[lang])), max_sentences
    for i, lang in enumerate(remaining):
        share = budget // (len(remaining) - i)
        taken = per_lang[lang][:share]
        chosen.extend(taken)
        budget -= len(taken)
    return chosen


def _hub_text(spec: str, limit: int) -> list[str]:
    parts = spec.split(":")[1:]
    name, config, split = (parts + [None, "train"])[:3] if len(parts) < 3 else parts[:3]
    try:
        from datasets import load_dataset

        rows = load_dataset(name, config, split=split or "train", streaming=True)
        texts = []
        for row in rows:
            texts.extend(line.strip() for line in str(row["text"]).split("\n") if line.strip())
            if len(texts) >= limit:
                break
        return texts[:limit]
    except Exception as exc:
        raise KDCompressError(
            f"could not stream corpus {spec!r} from the hub ({type(exc).__name__}); use local text files or 'task'"
        ) from None


def check_corpus_specs(specs: list[str] | str) -> None:
    """Refuse, in one line, a corpus that names no task text, no hub dataset and no existing file or folder: what a
    run checks before its first output (a corpus built by `kdcompress corpus` must exist before the run reads it)."""
    for spec in [specs] if isinstance(specs, str) else specs:
        if spec in TASK_SPLITS or spec.startswith("hub:") or Path(spec).expanduser().exists():
            continue
        raise KDCompressError(f"corpus {spec!r} is neither 'task', 'task:train', 'hub:NAME', nor an existing file or "
                              "folder; build it first (kdcompress corpus --out " + spec + ") or fix the path")


# The distill settings that name corpora (the training text and the text a trimmed vocabulary is read from)
CORPUS_SETTINGS = ("corpus", "trim_vocab_corpus")


def check_corpora(settings: dict) -> None:
    """check_corpus_specs on every corpus a distill settings table names."""
    for key in CORPUS_SETTINGS:
        check_corpus_specs(settings.get(key, []))


def load_corpus(specs: list[str], *, task: Task, langs: list[str], data_dir=None, max_sentences: int = 20000,
                seed: int = 0) -> list[str]:
    """Deduplicated, shuffled (deterministically by `seed`) unlabeled sentences, at most `max_sentences`."""
    texts: list[str] = []
    for spec in specs:
        if spec in TASK_SPLITS:
            texts.extend(_task_text(task, langs, data_dir, TASK_SPLITS[spec]))
        elif spec.startswith("hub:"):
            texts.extend(_hub_text(spec, max_sentences))
        else:
            check_corpus_specs([spec])
            path = Path(spec).expanduser()
            if (path / "manifest.json").is_file():
                texts.extend(_built_corpus_text(path, langs, max_sentences))
            else:
                texts.extend(_file_text(path))
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if not unique:
        raise KDCompressError("the pretraining corpus is empty; pass --corpus with text files or 'task'")
    random.Random(seed).shuffle(unique)
    return unique[:max_sentences]
