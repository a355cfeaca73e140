"""The static student (--student-layers 0): shape, pooling, save/load, distill, export and serving, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdcompress.errors import KDCompressError
from kdcompress.static_model import StaticStudentForSequenceClassification, register_static_student
from kdcompress.training.config import DistillConfig
from kdcompress.training.static_student import build_static_student, pca, sif_weights
from kdcompress.training.teacher_loading import load_general_teacher

LABELS = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
QUICK = dict(task="sib200", target_langs=["de", "zh"], student_layers=0, max_steps=3, batch_size=4, max_length=32,
             corpus_max_sentences=48, eval_limit=8, trim_vocab=True)


@pytest.fixture(scope="module")
def tiny_static(tiny_teacher_dir):
    teacher = load_general_teacher(str(tiny_teacher_dir))[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    keep = sorted(set(tokenizer(["Die Katze schläft.", "The cat sleeps on the mat.", "猫在睡觉"])["input_ids"][0]
                      + tokenizer(["The cat sleeps on the mat.", "猫在睡觉"])["input_ids"][0]
                      + tokenizer(["猫在睡觉"])["input_ids"][0] + tokenizer.all_special_ids))
    torch.manual_seed(0)
    return build_static_student(teacher, tokenizer, hidden=16, config_overrides=LABELS), tokenizer, teacher


def test_builder_shapes_and_distilled_rows(tiny_static):
    student, tokenizer, teacher = tiny_static
    assert student.embeddings.weight.shape == (teacher.config.vocab_size, 16)
    assert student.classifier.weight.shape == (3, 16) and student.config.num_hidden_layers == 0
    assert student.embeddings.weight.abs().sum() > 0  # rows come from the teacher, not zeros
    logits = student(**tokenizer(["Die Katze schläft.", "猫"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 3)


def test_pca_and_sif_follow_model2vec():
    vectors = torch.randn(200, 8) @ torch.randn(8, 8)
    reduced = pca(vectors, 3)
    variances = reduced.var(dim=0)
    assert reduced.shape == (200, 3) and bool((variances[:-1] >= variances[1:]).all())
    weights = sif_weights([0, 10, 1000], teacher_vocab_size=2000)
    assert bool((weights[:-1] < weights[1:]).all()) and float(weights[-1]) < 1.0  # frequent (low rank) weigh less


def test_pooling_ignores_padding(tiny_static):
    student, tokenizer, _ = tiny_static
    student.eval()
    short = tokenizer(["Die Katze schläft."], return_tensors="pt")
    padded = tokenizer(["Die Katze schläft."], padding="max_length", max_length=24, return_tensors="pt")
    assert padded["input_ids"].shape[1] > short["input_ids"].shape[1]
    torch.testing.assert_close(student(**short).logits, student(**padded).logits)


def test_save_load_roundtrip_without_remote_code(tiny_static, tmp_path):
    student, tokenizer, _ = tiny_static
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    register_static_student()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=False)
    assert isinstance(loaded, StaticStudentForSequenceClassification)
    inputs = tokenizer(["The cat sleeps on the mat."], return_tensors="pt")
    torch.testing.assert_close(loaded.eval()(**inputs).logits, student.eval()(**inputs).logits)


def test_static_student_learns_at_its_own_rate():
    assert DistillConfig(student_layers=0, lr=1e-4).check().student_lr == DistillConfig().static_lr
    assert DistillConfig(student_layers=6, lr=1e-4).check().student_lr == 1e-4
    assert DistillConfig(student_layers=0, static_lr=1e-2).check().student_lr == 1e-2


@pytest.mark.parametrize("settings, message", [
    (dict(strategy="pretrain"), "KD during pretraining"),
    (dict(strategy="both"), "KD during pretraining"),
    (dict(strategy="general"), "KD during pretraining"),
    (dict(strategy="finetune", finetune_hidden_weight=1.0), "--finetune-hidden-weight"),
    (dict(strategy="finetune", student_hidden=10_000), "--student-hidden"),
])
def test_static_refusals_are_one_line(tmp_path, tiny_teacher_dir, data_dir, settings, message):
    from kdcompress.training.distill import distill

    with pytest.raises(KDCompressError, match=message) as info:
        distill(teacher=str(tiny_teacher_dir), data_dir=str(data_dir), out=str(tmp_path / "s"),
                **{**QUICK, **settings})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_distill_export_and_serve(tmp_path, tiny_teacher_dir, data_dir):
    """The transfer recipe's settings (the lead's defaults included) with a static student, then int8 ONNX served by
    the Predictor, whose logits match PyTorch's."""
    from kdcompress.deploy.export import export_onnx
    from kdcompress.runtime import Predictor
    from kdcompress.training.distill import distill

    out = distill(teacher=str(tiny_teacher_dir), data_dir=str(data_dir), out=str(tmp_path / "static"),
                  strategy="finetune", kd_transfer="source+corpus", alpha=0.9, layer_selection="bottom",
                  init_from="finetuned-teacher", **QUICK).out
    record = json.loads((out / "distill.json").read_text())
    assert record["student"]["layer_map"] == [] and record["stages"][-1]["steps"] == 3
    assert record["dev_accuracy"]["split"] == "dev"
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    # trimmed: the corpus's tokens and every one-character token, a fifth of mBERT's 119,547
    assert model.config.model_type == "kdcompress-static" and model.config.vocab_size == len(tokenizer) < 119547 // 4

    fp32 = export_onnx(model_dir=out, out=tmp_path / "fp32", langs="en,de", data_dir=data_dir, check_samples=8,
                       progress=False)
    assert [i["name"] for i in fp32.report["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert fp32.report["onnx"]["last_layer"]["graph"] == "full"
    texts = ["Die Katze schläft.", "The weather in Berlin is cold today, with rain.", "猫在睡觉"]
    with torch.inference_mode():
        reference = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    served = Predictor(fp32.out, threads=1).logits(texts)
    np.testing.assert_allclose(served, reference, atol=1e-4)

    int8 = export_onnx(model_dir=out, out=tmp_path / "int8", quantize="dynamic", optimize=True, langs="en,de",
                       data_dir=data_dir, check_samples=8, progress=False)
    assert int8.precision == "int8" and int8.report["optimize"]["enabled"] is False
    assert int8.report["check"]["final"]["min_argmax_agreement"] >= 0.5
    assert len(list(Predictor(int8.out, threads=1).predict(texts))) == 3
