"""Per-language accuracy on a task's labelled split, with identical preprocessing for every backend."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from kdcompress.bench.runners import Runner
from kdcompress.data.tasks import Example, Task
from kdcompress.errors import KDCompressError

if TYPE_CHECKING:
    from kdcompress.bench.accuracy_cache import AccuracyCache

EVAL_BATCH_SIZE = 32
SAMPLE_SEED = 0


def sample_examples(examples: Sequence[Example], limit: int | None, *, seed: int = SAMPLE_SEED) -> list[Example]:
    """A seeded random sample of `limit` examples, in file order; all of them without a limit.

    Not the first N: task files are often sorted by label (SIB-200's are), so a prefix can hold a
    single class. The same seed picks the same rows in every language, so parallel data stays parallel.
    """
    if not limit or len(examples) <= limit:
        return list(examples)
    keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[:limit])
    return [examples[i] for i in keep]


def label_mapping(model_labels: Sequence[str], task: Task, *, model_name: str) -> np.ndarray:
    """For each model output index, the task's label index, matched by name so that order may differ."""
    if sorted(model_labels) != sorted(task.labels):
        missing = [label for label in task.labels if label not in model_labels]
        extra = [label for label in model_labels if label not in task.labels]
        detail = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                             f"unexpected {', '.join(extra)}" if extra else "") if part)
        raise KDCompressError(
            f"model {model_name} has labels that differ from task {task.name} ({detail or 'different count'}); "
            f"benchmark it on the task it was trained for"
        )
    return np.array([task.labels.index(label) for label in model_labels], dtype=np.int64)


def predict(runner: Runner, examples: Sequence[Example], mapping: np.ndarray, *,
            batch_size: int = EVAL_BATCH_SIZE, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Task-label predictions, batched with dynamic padding and truncation to the runner's max length.

    Sentences are batched by length (less padding, faster); results come back in input order.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].text_pair or ""))
    predicted = np.empty(len(examples), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        logits = runner.logits([examples[i].text for i in index], [examples[i].text_pair for i in index])
        predicted[index] = mapping[np.argmax(logits, axis=-1)]
        if on_batch:
            on_batch(len(index))
    return predicted


def accuracy(predicted: Sequence[int], gold: Sequence[int]) -> float:
    predicted, gold = np.asarray(predicted), np.asarray(gold)
    if predicted.shape != gold.shape or gold.size == 0:
        raise ValueError("accuracy needs equally long, non-empty prediction and gold sequences")
    return float((predicted == gold).mean())


def evaluate(runner: Runner, mapping: np.ndarray, examples_by_lang: Mapping[str, Sequence[Example]], *,
             batch_size: int = EVAL_BATCH_SIZE, on_batch: Callable[[int], None] | None = None,
             sentence_hits: bool = False, cache: "AccuracyCache | None" = None) -> dict[str, dict]:
    """{lang: {"accuracy", "correct", "n"}} for one model; with `sentence_hits`, also "hits": 1 where the
    sentence (in the order given) was labelled right, else 0. With a `cache` (bench.accuracy_cache), a language
    measured before with the same model bytes and settings is read back (marked "reused": true), and each language
    measured here is stored."""
    results = {}
    for lang, examples in examples_by_lang.items():
        identity = cache.identity(runner, mapping, lang, examples) if cache is not None else None
        stored = cache.get(identity, need_hits=sentence_hits) if cache is not None else None
        if stored is not None:
            results[lang] = {**stored, "reused": True}
            if on_batch:
                on_batch(len(examples))
            continue
        started = time.perf_counter()
        predicted = predict(runner, examples, mapping, batch_size=batch_size, on_batch=on_batch)
        seconds = time.perf_counter() - started
        gold = np.array([ex.label for ex in examples])
        hits = predicted == gold
        results[lang] = {"accuracy": accuracy(predicted, gold), "correct": int(hits.sum()), "n": len(examples)}
        if sentence_hits:
            results[lang]["hits"] = hits.astype(int).tolist()
        if cache is not None:
            cache.put(identity, results[lang], model=runner.path, seconds=seconds)
    return results


def summarize_languages(per_lang: Mapping[str, dict], source_lang: str, target_langs: Sequence[str]) -> dict:
    """Source accuracy, every target, and the unweighted target average (each language counts once)."""
    targets = {lang: per_lang[lang]["accuracy"] for lang in target_langs}
    return {
        "source": per_lang[source_lang]["accuracy"] if source_lang in per_lang else None,
        "targets": targets,
        "target_average": float(np.mean(list(targets.values()))) if targets else None,
        "per_language": dict(per_lang),
    }


def deltas_to_baseline(summary: Mapping[str, dict], baseline: str) -> dict[str, dict]:
    """Accuracy minus the baseline's, per language and for the source and target average."""
    base = summary[baseline]
    out = {}
    for name, model in summary.items():
        delta = {lang: model["per_language"][lang]["accuracy"] - base["per_language"][lang]["accuracy"]
                 for lang in model["per_language"]}
        delta["source"] = None if model["source"] is None else model["source"] - base["source"]
        delta["target_average"] = (None if model["target_average"] is None
                                   else model["target_average"] - base["target_average"])
        out[name] = delta
    return out
