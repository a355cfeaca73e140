"""configs/xnli_converged_gpu.toml, shrunk to a tiny teacher and a few steps, runs end to end.

On a CUDA machine (tools/device_xnli.sh runs this file there before the study) it exercises what only the GPU
study uses: students trained side by side on the GPU, their teacher logits computed there, and the accuracy
benchmark on `device = "cuda"`, each model's accuracy measured there as soon as it is trained. Elsewhere the same tables run on the CPU, so that the config stays valid."""

import json
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdcompress.cli import app

GPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "xnli_converged_gpu.toml"
ON_GPU = torch.cuda.is_available()


def _toml(tables: dict, prefix: str = "") -> str:
    """TOML text of nested tables of plain values (JSON's scalars and lists are TOML's)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in tables.items() if not isinstance(value, dict)]
    for key, value in tables.items():
        if isinstance(value, dict):
            name = f"{prefix}.{key}" if prefix else key
            lines += ["", f"[{name}]", _toml(value, name)]
    return "\n".join(lines)


def test_the_gpu_study_config_runs_on_a_tiny_teacher(tmp_path, tiny_teacher_dir, data_dir):
    tables = tomllib.loads(GPU_CONFIG.read_text())
    study = tables["experiment"]
    study.update(out=str(tmp_path / "study"), teacher=str(tiny_teacher_dir), data_dir=str(data_dir),
                 target_langs=["de", "sw"], seeds=[1, 2], workers=4 if ON_GPU else 2)
    study["arms"]["transfer-recipe"]["corpus_max_sentences"] = 40
    tables["distill"].update(student_layers=1, max_steps=2, batch_size=4, max_length=16, corpus=["task"],
                             corpus_max_sentences=16, evaluate=False,
                             teacher_logits_cache=str(tmp_path / "study" / "teacher-logits"))
    tables["bench"].update(limit=40, seq_lens=[16], repeats=1, rounds=1, warmup=0)
    if not ON_GPU:
        tables["bench"]["device"] = "cpu"
    config = tmp_path / "gpu_study.toml"
    config.write_text(_toml(tables))

    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])

    assert result.exit_code == 0, result.output
    out = tmp_path / "study"
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert bench["settings"]["device"] == ("cuda" if ON_GPU else "cpu")
    assert bench["settings"]["eval_batch_size"] == 256
    arms = {"none", "finetune", "pretrain", "transfer-recipe"}
    assert set(bench["accuracy"]) == {"teacher"} | {f"{arm}-s{seed}" for arm in arms for seed in (1, 2)}
    for row in bench["accuracy"].values():
        assert {lang: result["n"] for lang, result in row["per_language"].items()} == {"en": 40, "de": 40, "sw": 40}
        # measured in the pool as soon as each model existed; the benchmark read it back
        assert all(result["reused"] for result in row["per_language"].values())
    # the finetune and transfer students read their teacher logits from one cache: one file per transfer set
    assert len(list((out / "teacher-logits").glob("*.safetensors"))) == 2
    report = json.loads((out / "report" / "experiment.json").read_text())
    assert set(report["summary"]) == {f"{arm}/pytorch" for arm in arms | {"teacher"}}
    assert {name for name in report["step_seconds"] if name.startswith("accuracy ")} == {
        f"accuracy {name}" for name in bench["accuracy"]}
