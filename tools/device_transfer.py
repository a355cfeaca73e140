"""Carry general students made on this workplace's lent GPU machine back to the CPU machine.

Anywhere else, copy the students/general-* folders (scp, rsync). Here a call may bring back only 8 files of
16 MiB each, and a 6-layer student of a 250k-token teacher holds 428 MB, almost all of it the word-embedding
table. With `freeze_embeddings` that table is the teacher's, bit for bit, so `pack` checks that, leaves it out
and writes every other tensor in float16 (relative rounding error at most 2^-11; the largest is recorded); `unpack` puts
the teacher's table back, restores float32 and writes a normal general-student folder, its distill.json noting
where and how it was made.

    python tools/device_transfer.py pack  EXPERIMENT_DIR OUT_DIR              # on the GPU machine
    python tools/device_transfer.py unpack PACK_DIR TEACHER_DIR STUDENTS_DIR   # here
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
SHARD_BYTES = 15 * 2**20  # under the 16 MiB a returned file may have
MANIFEST = "generals.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")


def _word_embeddings(keys) -> str:
    """The table's name, with or without a head's prefix ('bert.' in a masked-LM teacher)."""
    return next(k for k in keys if k.endswith(WORD_EMBEDDINGS))


def _teacher_of(student: Path) -> Path:
    return Path(json.loads((student / "distill.json").read_text())["teacher"]["name"])


def pack(experiment: Path, out: Path) -> None:
    manifest: dict[str, dict] = {}
    for student in sorted((experiment / "students").glob("general-*")):
        if student.name.endswith(".partial") or not (student / "distill.json").exists():
            continue  # unfinished: nothing to carry
        weights = load_file(student / "model.safetensors")
        teacher_file = _teacher_of(student) / "model.safetensors"
        table = _word_embeddings(weights)
        with safe_open(str(teacher_file), "pt") as teacher:
            if not torch.equal(weights[table], teacher.get_tensor(_word_embeddings(teacher.keys()))):
                raise SystemExit(f"{student}: word embeddings differ from the teacher's (not frozen?): carry it whole")
        del weights[table]
        shards, current, size, worst = [], {}, 0, 0.0
        for name, tensor in weights.items():
            half = tensor.to(torch.float16)
            normal = tensor.abs() >= 2**-14  # below it float16 is subnormal and keeps an absolute error of 2^-25
            error = (half.float() - tensor).abs()
            worst = max(worst, float((error[normal] / tensor.abs()[normal]).max()) if normal.any() else 0.0)
            if current and size + half.numel() * 2 > SHARD_BYTES:
                shards.append(current)
                current, size = {}, 0
            current[name], size = half.contiguous(), size + half.numel() * 2
        shards.append(current)
        files = []
        for index, shard in enumerate(shards):
            files.append(f"{student.name}.{index}.safetensors")
            save_file(shard, out / files[-1])
        manifest[student.name] = {
            "files": files, "max_relative_rounding": worst, "word_embeddings": table,
            "distill": json.loads((student / "distill.json").read_text()),
            "config": json.loads((student / "config.json").read_text()),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        }
        print(f"packed {student.name}: {len(files)} files, max relative rounding {worst:.2e}")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


def unpack(pack_dir: Path, teacher: Path, students: Path) -> None:
    manifest = json.loads((pack_dir / MANIFEST).read_text())
    with safe_open(str(teacher / "model.safetensors"), "pt") as teacher_weights:
        word_embeddings = teacher_weights.get_tensor(_word_embeddings(teacher_weights.keys()))
    for name, entry in manifest.items():
        target = students / name
        if target.exists():
            print(f"{target} exists: left as it is")
            continue
        weights = {entry["word_embeddings"]: word_embeddings}
        for file in entry["files"]:
            weights.update({k: v.to(torch.float32) for k, v in load_file(pack_dir / file).items()})
        partial = students / f".{name}.unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
        (partial / "config.json").write_text(json.dumps(entry["config"], indent=2))
        for file in TOKENIZER_FILES:
            if (teacher / file).exists():
                shutil.copy2(teacher / file, partial / file)
        distill = entry["distill"]
        distill["made_on"] = {"device": entry["device"], "carried": "word embeddings from the teacher (frozen); "
                              f"other weights in float16, max relative rounding {entry['max_relative_rounding']:.1e}",
                              "teacher_there": distill["teacher"]["name"]}
        distill["teacher"]["name"] = str(teacher)
        (partial / "distill.json").write_text(json.dumps(distill, indent=1))
        os.replace(partial, target)
        print(f"unpacked {target}")


if __name__ == "__main__":
    verb, *paths = sys.argv[1:]
    {"pack": pack, "unpack": unpack}[verb](*map(Path, paths))
