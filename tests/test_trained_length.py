"""A model carries the length it was trained at: export records it, bench and predict truncate to it by default."""

from __future__ import annotations

import json
import shutil

from kdcompress.bench.runners import load_runner
from kdcompress.model_config import trained_max_length


def test_bench_export_and_predict_read_the_trained_length(tiny_classifier_dir, data_dir, tmp_path):
    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    model = tmp_path / "student"
    shutil.copytree(tiny_classifier_dir, model)
    assert trained_max_length(model) is None
    (model / "distill.json").write_text(json.dumps({"max_length": 16}))
    assert trained_max_length(model) == 16

    assert load_runner(model, "cpu", 1).max_length == 16  # bench's default
    assert load_runner(model, "cpu", 1, max_length=24).max_length == 24  # a length asked for still wins

    exported = export_onnx(model_dir=str(model), out=str(tmp_path / "onnx"), task="sib200", langs=["en"],
                           data_dir=str(data_dir), check_samples=2, progress=False)
    assert json.loads((exported.out / "export.json").read_text())["max_length"] == 16
    long_text = " ".join(["Bahnhof"] * 100)
    assert Predictor(exported.out, threads=1).encoder([long_text])["input_ids"].shape == (1, 16)
    assert Predictor(exported.out, threads=1, max_length=32).encoder([long_text])["input_ids"].shape == (1, 32)
