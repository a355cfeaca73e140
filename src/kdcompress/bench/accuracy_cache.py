"""A model's accuracy on one language, kept on disk so that no model runs over the same test split twice.

An experiment measures each model as soon as it is trained (in its step pool, beside the students still training),
and its benchmark then only times the models: on the lent GPU, a benchmark of 13 XNLI models after the last student
outran the call. A rerun of `bench` with one model more, or after an interruption, runs only what is missing.

An entry is reused only when everything its numbers depend on matches, as in the teacher-logits cache
(training/logits_cache.py): the bytes of every file in the model folder (a copied model still hits, a retrained one
misses), how it is run (runner, runtime, device, truncation length, label mapping), the examples themselves, and the
versions of the libraries that compute them."""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from kdcompress.data.tasks import Example, fingerprint

_LIBRARIES = ("torch", "transformers", "tokenizers", "onnxruntime", "openvino", "numpy")


@lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    found = []
    for name in _LIBRARIES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(found)


def folder_digest(path: str | Path) -> str:
    """sha256 over every file under `path` (relative name and bytes), in name order."""
    root = Path(path).expanduser()
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


class AccuracyCache:
    """{key}.json files in one folder: a language's {"accuracy", "correct", "n"[, "hits"]}."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self._digests: dict[Path, str] = {}
        self._fingerprints: dict[int, tuple[Sequence[Example], str]] = {}  # by id, the list kept alive beside it

    def identity(self, runner, mapping: np.ndarray, lang: str, examples: Sequence[Example]) -> dict:
        """Everything the numbers depend on; its hash is the entry's key."""
        path = Path(runner.path).resolve()
        if path not in self._digests:  # hashing a 12-layer model takes about a second: once per model
            self._digests[path] = folder_digest(path)
        if id(examples) not in self._fingerprints:  # every model reads the same examples: hashed once a language
            self._fingerprints[id(examples)] = (examples, fingerprint(list(examples)))
        return {"model": self._digests[path], "runner": type(runner).__name__, "format": runner.format,
                "runtime": getattr(runner, "runtime", None), "device": runner.device,
                "max_length": runner.max_length, "mapping": np.asarray(mapping).tolist(), "lang": lang,
                "examples": self._fingerprints[id(examples)][1], "versions": _versions()}

    @staticmethod
    def key(identity: dict) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, identity: dict, *, need_hits: bool) -> dict | None:
        try:
            entry = json.loads((self.folder / f"{self.key(identity)}.json").read_text(encoding="utf-8"))
            result = dict(entry["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or unreadable: measured again, and rewritten
        if not {"accuracy", "correct", "n"} <= set(result) or (need_hits and "hits" not in result):
            return None
        if not need_hits:
            result.pop("hits", None)
        return result

    def entries(self) -> list[dict]:
        """Every readable entry ({"model_dir", "lang", "result", "identity"[, "seconds"]}), unreadable ones left out."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(entry, dict) and isinstance(entry.get("model_dir"), str):
                    found.append(entry)
            except (OSError, ValueError):
                continue  # measured again by the next run
        return found

    def put(self, identity: dict, result: dict, *, model: str | Path, seconds: float | None = None) -> None:
        """Stored with the model's folder and the identity, so that an entry can be read without its key, and with
        the seconds the measurement took (`experiment-status` estimates from them what is left)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.key(identity)}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        entry = {"model_dir": str(model), "lang": identity["lang"], "result": result, "identity": identity}
        if seconds is not None:
            entry["seconds"] = round(seconds, 4)
        tmp.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(tmp, path)  # two processes measuring the same model write the same numbers: the last wins


def measure_into_cache(*, model: str, cache: str, task: str, split: str, langs: list[str], limit: int | None,
                       data_dir: str | None, device: str, threads: int | None, max_length: int | None,
                       sentence_hits: bool, eval_batch_size: int) -> tuple[float, int]:
    """Measure one model's accuracy into `cache`, as `bench` with the same settings would (an experiment's step
    pool runs this right after a student is trained). Returns the seconds it took and how many languages it
    measured (not read back)."""
    import torch

    from kdcompress.bench import accuracy as acc
    from kdcompress.bench.run import bench_progress
    from kdcompress.console import stderr_console
    from kdcompress.bench.runners import load_runner
    from kdcompress.data.tasks import get_task

    started = time.perf_counter()
    task_row = get_task(task)
    # default: the threads this process has (in a step pool, the worker's share of the cores)
    runner = load_runner(model, device, threads or torch.get_num_threads(), max_length=max_length)
    mapping = acc.label_mapping(runner.labels, task_row, model_name=Path(model).name)
    examples = {lang: acc.sample_examples(task_row.load(split, lang, data_dir=data_dir), limit) for lang in langs}
    # a full test set in 15 languages keeps a worker's CPU core busy for many minutes: a log shows it going
    with bench_progress(stderr_console(), quiet=False) as progress:
        job = progress.add_task("test accuracy", total=sum(len(rows) for rows in examples.values()))
        results = acc.evaluate(runner, mapping, examples, batch_size=eval_batch_size, sentence_hits=sentence_hits,
                               cache=AccuracyCache(cache), on_batch=lambda count: progress.advance(job, count))
    return time.perf_counter() - started, sum(not row.get("reused") for row in results.values())
