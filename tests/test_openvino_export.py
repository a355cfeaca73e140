"""`export-onnx --runtime openvino` and the per-language int8 control, on tiny random models.

Random weights check mechanics (parity, files, the control's record), never accuracy: the measured
agreement of a real student is in benchmarks/README.md.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcompress.errors import KDCompressError

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
NEEDS_OPENVINO = pytest.mark.skipif(not HAS_OPENVINO,
                                    reason="openvino/nncf are not installed: pip install 'kdcompress[openvino]'")
TEXTS = ["Where is the train station?", "Der Zug fährt um acht Uhr ab.", "火车八点出发。",
         "A much longer English sentence about football, the weather and politics in one go.", "x"]


def _report(out: Path) -> dict:
    return json.loads((out / "export.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ov_fp32(tmp_path_factory, tiny_classifier_dir, data_dir) -> Path:
    from kdcompress import export_onnx

    out = tmp_path_factory.mktemp("ov") / "fp32"
    result = export_onnx(model_dir=tiny_classifier_dir, out=out, runtime="openvino", langs="en,de,zh",
                         data_dir=data_dir, check_samples=12, eval_samples=12, progress=False)
    assert result.runtime == "openvino" and result.model_path == out / "openvino_model.xml"
    return out


@NEEDS_OPENVINO
def test_openvino_export_matches_pytorch_per_language(ov_fp32, tiny_classifier_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdcompress.runtime import Predictor

    names = {p.name for p in ov_fp32.iterdir()}
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json", "export.json"} <= names
    assert "model.onnx" not in names  # self-contained OpenVINO directory, not an ONNX one
    report = _report(ov_fp32)
    assert report["runtime"] == "openvino" and report["precision"] == "fp32"
    assert report["openvino"]["inference_precision"] in ("f32", "bf16") and report["openvino"]["version"]
    check = report["check"]
    assert set(check["final"]["per_language"]) == {"en", "de", "zh"}
    assert check["openvino_fp32"]["max_abs_logit_diff"] < 1e-3  # OpenVINO f32 vs PyTorch, per language
    assert all(row["argmax_agreement"] == 1.0 for row in check["openvino_fp32"]["per_language"].values())
    assert report["files"]["model"] == "openvino_model.xml" and report["sizes"]["model_bytes"] > 0

    moved = ov_fp32.parent / "moved"
    shutil.copytree(ov_fp32, moved)
    predictor = Predictor(moved, threads=1, precision="f32")
    assert predictor.runtime == "openvino"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS, padding=True, truncation=True, max_length=128,
                                     return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(predictor.logits(TEXTS), expected, atol=1e-3)


@NEEDS_OPENVINO
def test_static_lengths_serve_single_sentences_padded_with_the_dynamic_models_logits(ov_fp32, tiny_classifier_dir,
                                                                                     tmp_path, data_dir):
    from transformers import AutoTokenizer

    from kdcompress import export_onnx
    from kdcompress.runtime.backends import OpenVinoBackend

    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    backend = OpenVinoBackend(ov_fp32 / "openvino_model.xml", threads=1, precision="f32", static_lengths=(8, 16))
    assert backend.static_lengths == (8, 16) and set(backend.static_requests) == {8, 16}
    routed = set()
    for text in TEXTS:
        feed = {k: v.astype(np.int64) for k, v in tokenizer(text, return_tensors="np").items()
                if k in backend.input_names}
        request, padded = backend._route(feed)
        length = feed["input_ids"].shape[1]
        if length <= 16:
            routed.add(padded["input_ids"].shape[1])
            assert request is backend.static_requests[padded["input_ids"].shape[1]]
            assert padded["attention_mask"][0, length:].sum() == 0  # the padding is masked out
        else:
            assert request is backend.request and padded is feed
        backend.request.infer(feed)
        dynamic = np.array(backend.request.get_output_tensor(0).data, dtype=np.float32)
        np.testing.assert_allclose(backend.run(feed), dynamic, atol=1e-5)
    assert routed  # at least one sentence went through a static model
    batch = {k: v.astype(np.int64) for k, v in tokenizer(TEXTS[:2], padding=True, return_tensors="np").items()
             if k in backend.input_names}
    assert backend._route(batch)[0] is backend.request  # batches take the dynamic model

    out = tmp_path / "static"
    export_onnx(model_dir=tiny_classifier_dir, out=out, runtime="openvino", langs="en,de", data_dir=data_dir,
                check_samples=6, progress=False, openvino_static_lengths=[16, 8, 16])
    report = _report(out)["openvino"]
    assert report["static_lengths"] == [8, 16]
    assert report["static_check"]["sentences"] == 12 and report["static_check"]["argmax_agreement"] == 1.0
    assert OpenVinoBackend(out / "openvino_model.xml", threads=1, precision="f32").static_lengths == (8, 16)


@pytest.mark.parametrize("settings, message", [
    ({"runtime": "onnxruntime", "openvino_static_lengths": [16]}, "add --runtime openvino"),
    ({"runtime": "openvino", "openvino_static_lengths": [0]}, "is not a length in tokens"),
    ({"int8_confidence": 0.2}, "--int8-confidence 0.2 must be at least 0.5 and below 1"),
    ({"int8_confidence": 1.0}, "--int8-confidence 1.0 must be at least 0.5 and below 1"),
    ({"runtime": "openvino", "quantize": "weights", "accuracy_goal": 0.01}, "--quantize weights has none"),
])
def test_bad_export_settings_are_one_line(settings, message):
    from kdcompress.deploy.config import ExportConfig

    with pytest.raises(KDCompressError, match=message):
        ExportConfig.from_dict({"model_dir": "m", "out": "o", **settings})


@NEEDS_OPENVINO
def test_openvino_static_int8_records_the_control(tmp_path, tiny_classifier_dir, data_dir):
    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    out = tmp_path / "ov8"
    result = export_onnx(model_dir=tiny_classifier_dir, out=out, runtime="openvino", quantize="static",
                         langs="en,de", data_dir=data_dir, check_samples=8, eval_samples=16,
                         calibration_samples=16, max_trials=2, progress=False)
    report = result.report
    assert report["precision"] == "int8" and report["quantization"]["tool"] == "nncf"
    control = report["int8_control"]
    assert control["attempts"][0]["name"] == "default" and control["attempts"][0]["why"] == "the default int8"
    assert control["kept"] in [a["name"] for a in control["attempts"] if a["tried"]]
    for attempt in control["attempts"]:  # every rung says why it was tried (or skipped)
        assert attempt["why"]
        if attempt["tried"]:
            assert set(attempt["per_language"]) == {"en", "de"}
    order = ["default", "per_channel_reduced_range", "fp32_embeddings", "int8_weights_only", "sensitive_ops_fp32"]
    assert [a["name"] for a in control["attempts"]] == order[:len(control["attempts"])]
    if control["kept"] == "int8_weights_only":
        assert "calibration" not in report["quantization"] and "weights only" in report["quantization"]["method"]
    assert Predictor(out, threads=1).predict(TEXTS)[0].label


@NEEDS_OPENVINO
def test_openvino_weights_only_int8_is_a_mode_of_its_own(tmp_path, tiny_classifier_dir, data_dir):
    """--quantize weights: NNCF weight compression alone, no calibration, judged by the same control."""
    import openvino as ov

    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    out = tmp_path / "ov8w"
    report = export_onnx(model_dir=tiny_classifier_dir, out=out, runtime="openvino", quantize="weights",
                         langs="en,de", data_dir=data_dir, check_samples=8, eval_samples=16, progress=False,
                         int8_confidence=0.95).report
    assert report["precision"] == "int8" and "weights only" in report["quantization"]["method"]
    assert "calibration" not in report["quantization"]
    control = report["int8_control"]
    assert control["kept"] == "int8_weights_only" and set(control["per_language"]) == {"en", "de"}
    assert "paired standard errors" in control["rule"]
    types = {op.get_element_type().get_type_name() for op in ov.Core().read_model(str(out / "openvino_model.xml"))
             .get_ordered_ops() if op.get_type_name() == "Constant"}
    assert "i8" in types  # the weights are stored in int8
    assert Predictor(out, threads=1).predict(TEXTS)[0].label
    with pytest.raises(KDCompressError, match="--quantize weights is OpenVINO's int8"):
        export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "ort", quantize="weights", progress=False)
    assert not (tmp_path / "ort").exists()


@NEEDS_OPENVINO
def test_int8_weights_only_leaves_the_fp32_model_and_activations_alone(ov_fp32):
    import openvino as ov

    from kdcompress.deploy import openvino as ovx

    model = ov.Core().read_model(str(ov_fp32 / "openvino_model.xml"))
    before = sorted(op.get_element_type().get_type_name() for op in model.get_ordered_ops()
                    if op.get_type_name() == "Constant")
    compressed = ovx.compress_int8_weights(model)
    after = sorted(op.get_element_type().get_type_name() for op in model.get_ordered_ops()
                   if op.get_type_name() == "Constant")
    assert after == before  # the caller's fp32 model is not rewritten
    types = {op.get_type_name() for op in compressed.get_ordered_ops()}
    assert "FakeQuantize" not in types  # no int8 activations
    int8_weights = [op for op in compressed.get_ordered_ops()
                    if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]
    weighted_matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
                        and op.input_value(1).get_node().get_type_name() == "Constant"]
    assert weighted_matmuls and len(int8_weights) >= len(weighted_matmuls)
    rng = np.random.default_rng(0)
    feed = {port.get_any_name(): rng.integers(5, 500, (2, 16)) if "input_ids" in port.get_any_name()
            else np.ones((2, 16), np.int64) for port in model.inputs}
    fp32, int8 = (ovx._run(ovx.compile_model(m, "f32"), feed) for m in (model, compressed))
    assert np.abs(fp32 - int8).max() < 0.05 * max(1.0, np.abs(fp32).max())  # weight rounding only


def test_openvino_rejects_dynamic_and_fused_graphs():
    from kdcompress.deploy.config import ExportConfig

    with pytest.raises(KDCompressError, match="NNCF.*static"):
        ExportConfig.from_dict({"model_dir": "m", "out": "o", "runtime": "openvino", "quantize": "dynamic"})
    with pytest.raises(KDCompressError, match="--optimize"):
        ExportConfig.from_dict({"model_dir": "m", "out": "o", "runtime": "openvino", "optimize": True})
    with pytest.raises(KDCompressError, match="--runtime"):
        ExportConfig.from_dict({"model_dir": "m", "out": "o", "runtime": "tensorrt"})
    goal = ExportConfig.from_dict({"model_dir": "m", "out": "o", "runtime": "openvino", "accuracy_goal": 0.01})
    assert goal.quantize == "static"


@pytest.mark.parametrize("quantize", ["none", "static"])
def test_missing_openvino_extra_is_one_line_before_any_work(tmp_path, monkeypatch, quantize):
    from kdcompress import export_onnx
    from kdcompress.deploy import export as export_module

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(export_module, "load_model_dir", lambda *_: pytest.fail("work started"))
    with pytest.raises(KDCompressError, match=r"pip install 'kdcompress\[openvino\]'") as info:
        export_onnx(model_dir=str(tmp_path), out=str(tmp_path / "out"), runtime="openvino", quantize=quantize)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_missing_nncf_names_the_extra_for_int8(tmp_path, monkeypatch):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    from kdcompress import export_onnx

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(KDCompressError, match=r"pip install 'kdcompress\[openvino\]'"):
        export_onnx(model_dir=str(tmp_path), out=str(tmp_path / "out"), runtime="openvino", quantize="static")


# --- the int8 control's ladder ------------------------------------------------------------------

def _gate(labels: bool = True):
    from kdcompress.deploy.int8_control import GateData

    rng = np.random.default_rng(0)
    reference = {lang: rng.normal(size=(100, 3)) for lang in ("en", "ha")}
    truth = {lang: ref.argmax(-1) for lang, ref in reference.items()}
    return GateData(reference, truth if labels else None, np.arange(3) if labels else None, source="fake dev")


def _flip(logits: np.ndarray, n: int) -> np.ndarray:
    out = logits.copy()
    out[:n] = np.roll(out[:n], 1, axis=1)  # a different argmax for the first n rows
    return out


def test_gate_accepts_97_percent_agreement_or_one_point_accuracy():
    from kdcompress.deploy.int8_control import judge

    gate = _gate()
    ok = judge(gate, {lang: _flip(ref, 3) for lang, ref in gate.reference.items()})
    assert ok["passed"] and ok["min_agreement"] == 0.97
    bad = judge(gate, {"en": gate.reference["en"], "ha": _flip(gate.reference["ha"], 4)})
    assert not bad["passed"] and bad["failing"] == ["ha"] and bad["per_language"]["ha"]["accuracy_drop"] == 0.04
    # 10 rows change class but stay wrong: agreement 90%, accuracy unchanged -> passes on accuracy
    from kdcompress.deploy.int8_control import GateData

    truth = {lang: (ref.argmax(-1) + 1) % 3 for lang, ref in gate.reference.items()}
    lenient = GateData(gate.reference, truth, np.arange(3))
    moved = {lang: ref.copy() for lang, ref in gate.reference.items()}
    for ref in moved.values():
        ref[:10] = np.roll(ref[:10], -1, axis=1)  # argmax - 1: neither fp32's answer nor the truth
    verdict = judge(lenient, moved)
    assert verdict["passed"] and verdict["min_agreement"] == 0.9
    assert verdict["per_language"]["en"]["accuracy_drop"] == 0.0
    assert not judge(GateData(gate.reference, None, None), moved)["passed"]  # without labels: agreement only


def test_gate_with_confidence_fails_a_language_only_beyond_its_sampling_error():
    """99 sentences, fp32 right on 80: int8 loses 3 of them and gains 1 (2 points down, 96% agreement). Read as
    measured that fails; with 95% confidence the allowance is 1 point + 1.64 paired SEs (3.3 points): it passes.
    Losing 8 (8 points, SE 2.8) fails either way."""
    from kdcompress.deploy.int8_control import GateData, judge, paired_drop_se, shortfall

    n = 99
    reference = np.zeros((n, 3), dtype=np.float32)
    reference[np.arange(n), 0] = 1.0
    truth = np.zeros(n, dtype=int)
    truth[80:] = 1  # fp32 (always class 0) is right on the first 80
    candidate = reference.copy()
    candidate[[0, 1, 2], :] = np.roll(candidate[[0, 1, 2], :], 1, axis=1)  # 3 right answers lost
    candidate[80, :] = [0.0, 1.0, 0.0]  # 1 gained
    labels = {"yo": truth}
    strict = GateData({"yo": reference}, labels, np.arange(3))
    sure = GateData({"yo": reference}, labels, np.arange(3), confidence=0.95)
    row = judge(strict, {"yo": candidate})["per_language"]["yo"]
    assert row["agreement"] == round(95 / 99, 4) and row["accuracy_drop"] == round(2 / 99, 4) and not row["ok"]
    assert row["allowed_drop"] == 0.01 and shortfall(strict, {"yo": candidate})["yo"] > 0
    change = np.r_[np.ones(3), -1.0, np.zeros(n - 4)]
    assert paired_drop_se(np.ones(4, bool), np.ones(4, bool)) == 0.0
    assert abs(paired_drop_se(change >= 0, change <= 0) - change.std(ddof=1) / np.sqrt(n)) < 1e-12
    row = judge(sure, {"yo": candidate})["per_language"]["yo"]
    assert row["ok"] and abs(row["allowed_drop"] - (0.01 + 1.6449 * change.std(ddof=1) / np.sqrt(n))) < 1e-3
    assert shortfall(sure, {"yo": candidate}) == {"yo": 0.0}
    worse = reference.copy()
    worse[:8, :] = np.roll(worse[:8, :], 1, axis=1)
    assert not judge(sure, {"yo": worse})["passed"]
    assert "plus 1.64 paired standard errors" in sure.allowance() and "plus" not in strict.allowance()


def test_ladder_tries_fallbacks_in_order_and_keeps_the_first_that_passes():
    from kdcompress.deploy.int8_control import Ladder, Rung

    gate = _gate()
    flips = {"default": 9, "per_channel_reduced_range": 5, "fp32_embeddings": 2, "sensitive_ops_fp32": 0}
    built = []

    def rung(name, skip=None):
        return Rung(name, name, lambda: (built.append(name), (name, {"detail": name}))[1], skip=skip)

    ladder = Ladder(gate, lambda name: {"en": gate.reference["en"], "ha": _flip(gate.reference["ha"], flips[name])})
    kept, record = ladder.run([rung("default"), rung("per_channel_reduced_range"),
                               rung("fp32_embeddings"), rung("sensitive_ops_fp32")])
    assert kept == "fp32_embeddings" and built == ["default", "per_channel_reduced_range", "fp32_embeddings"]
    assert record["passed"] and record["kept"] == "fp32_embeddings"
    whys = [a["why"] for a in record["attempts"]]
    assert whys[0] == "the default int8" and "ha 91.0%" in whys[1] and "ha 95.0%" in whys[2]

    nothing_passes = Ladder(gate, lambda name: {"en": gate.reference["en"], "ha": _flip(gate.reference["ha"], 9 if
                                                                                          name == "default" else 6)})
    kept, record = nothing_passes.run([rung("default"), rung("per_channel_reduced_range", skip="already"),
                                       rung("fp32_embeddings")])
    assert kept == "fp32_embeddings" and not record["passed"] and "fewest failing" in record["why_kept"]
    assert record["attempts"][1] == {"name": "per_channel_reduced_range", "description": "per_channel_reduced_range",
                                     "tried": False, "why": "already"}


def test_ort_int8_export_records_the_control(tmp_path, tiny_classifier_dir, data_dir):
    from kdcompress import export_onnx

    result = export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "int8", quantize="dynamic", langs="en,sw",
                         data_dir=data_dir, check_samples=8, eval_samples=16, max_trials=3, progress=False)
    control = result.report["int8_control"]
    assert control["data"].startswith("sib200 dev") and control["attempts"][0]["name"] == "default"
    assert set(control["attempts"][0]["per_language"]) == {"en", "sw"}
    assert control["kept"] in [a["name"] for a in control["attempts"] if a["tried"]]
    kept = next(a for a in control["attempts"] if a["name"] == control["kept"])
    assert result.report["quantization"]["label"] == kept["scheme"]
    off = export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "off", quantize="dynamic", langs="en",
                      data_dir=data_dir, check_samples=8, min_agreement=0, progress=False)
    assert "int8_control" not in off.report


def test_sensitive_rung_keeps_int8_embeddings_unless_fp32_ones_halve_the_failures():
    from kdcompress.deploy.int8_control import sensitive_base

    def attempt(name, failing, agreement=0.9):
        return {"name": name, "tried": True, "failing": ["x"] * failing, "min_agreement": agreement}

    base = sensitive_base([attempt("default", 20), attempt("per_channel_reduced_range", 23),
                           attempt("fp32_embeddings", 19)])
    assert base[:2] == ("default", False) and "not halved" in base[2]
    base = sensitive_base([attempt("default", 7), attempt("per_channel_reduced_range", 4, 0.8),
                           attempt("fp32_embeddings", 2)])
    assert base[:2] == ("per_channel_reduced_range", True) and "halved" in base[2]
    skipped = {"name": "fp32_embeddings", "tried": False, "why": "already fp32"}
    assert sensitive_base([attempt("default", 3), skipped])[:2] == ("default", False)


@NEEDS_OPENVINO
def test_cli_export_onnx_runtime_openvino(tmp_path, tiny_classifier_dir, data_dir):
    from typer.testing import CliRunner

    from kdcompress.cli import app

    out = tmp_path / "ov"
    result = CliRunner().invoke(app, ["export-onnx", str(tiny_classifier_dir), "--out", str(out), "--runtime",
                                      "openvino", "--langs", "en,sw", "--data-dir", str(data_dir),
                                      "--check-samples", "6", "--eval-samples", "6"])
    assert result.exit_code == 0, result.output
    report = _report(out)
    assert report["runtime"] == "openvino" and set(report["check"]["final"]["per_language"]) == {"en", "sw"}
    assert report["check"]["openvino_fp32"]["max_abs_logit_diff"] < 1e-3
    bad = CliRunner().invoke(app, ["export-onnx", str(tiny_classifier_dir), "--out", str(tmp_path / "x"),
                                   "--runtime", "openvino", "--quantize", "dynamic"])
    assert bad.exit_code == 2 and "static" in " ".join(bad.output.split())
