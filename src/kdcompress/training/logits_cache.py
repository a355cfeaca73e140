"""The fine-tuned teacher's logits on a KD training set, kept on disk for the next student of the same teacher.

`compress` distils several students from one teacher on one transfer set: without this, each recomputed the same
12-layer forward passes over every sentence (3-10 minutes per student on 2 cores). The key covers all that the
logits depend on: the teacher's weights (their bytes: a copied or moved teacher still hits, a retrained one misses), the
texts, and the truncation length; a changed teacher or transfer set simply misses the cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from kdcompress.training.batching import TextBatcher

WEIGHTS_FILE = "model.safetensors"


def cache_key(teacher_dir: str | Path, batcher: TextBatcher) -> str:
    # hashing the weights takes about a second for a 12-layer teacher: nothing beside the passes it saves
    with (Path(teacher_dir).expanduser() / WEIGHTS_FILE).open("rb") as weights:
        teacher = hashlib.file_digest(weights, "sha256").hexdigest()
    identity = {"teacher": teacher,
                "tokenizer": type(batcher.tokenizer).__name__, "vocab": len(batcher.tokenizer),
                "max_length": batcher.max_length}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for text, pair in zip(batcher.texts, batcher.pairs or [None] * len(batcher.texts)):
        digest.update(f"{text}\t{pair}\n".encode())
    return digest.hexdigest()[:16]


def teacher_logits(cache_dir: str | Path | None, teacher_dir: str | Path, batcher: TextBatcher,
                   compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, or what an earlier run with the same key saved in `cache_dir`."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir).expanduser() / f"{cache_key(teacher_dir, batcher)}.safetensors"
    if path.is_file():
        return load_file(str(path))["logits"]
    logits = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"logits": logits.contiguous()}, str(tmp))
    os.replace(tmp, path)  # concurrent writers write the same logits: the last rename wins, harmlessly
    return logits
