"""The slim predictor (kdcompress.runtime), `predict`'s input reader and file writer, and OpenVINO export.

A tiny random BERT classifier (mBERT's real vocabulary) is exported to ONNX once per module with
torch.onnx's TorchScript exporter, laid out like an export-onnx directory.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcompress.errors import KDCompressError

TEXTS = [
    "Short one.",
    "A considerably longer English sentence, so that this batch really needs padding to line up.",
    "Ein deutscher Satz über das Wetter in Berlin.",
    "中文句子也应该可以。",
    "x",
    "Kiswahili ni lugha ya Afrika Mashariki na inazungumzwa na watu wengi sana katika nchi nyingi.",
    "Une phrase française, avec des accents : é, è, à.",
]
PAIRS = ["The weather.", "Short.", None, "另一个句子", "yes " * 200, "Lugha.", "Deuxième phrase."]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
NEEDS_OPENVINO = pytest.mark.skipif(not HAS_OPENVINO,
                                    reason="openvino is not installed: pip install 'kdcompress[openvino]'")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, tiny_classifier_dir) -> Path:
    """tiny_classifier_dir exported to model.onnx + config.json + tokenizer files."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_onnx")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    example = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), tuple(example[n] for n in names), str(out / "model.onnx"), dynamo=False,
                          input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=17)
    shutil.copyfile(tiny_classifier_dir / "config.json", out / "config.json")
    tokenizer.save_pretrained(out)
    (out / "export.json").write_text(json.dumps({"precision": "fp32"}), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def torch_reference(tiny_classifier_dir):
    """(logits for texts, logits for text pairs) from PyTorch and transformers' tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    kwargs = dict(padding=True, truncation=True, max_length=128, return_tensors="pt")
    pairs = [p or "" for p in PAIRS]
    with torch.no_grad():
        single = model(**tokenizer(TEXTS, **kwargs)).logits.numpy()
        paired = [model(**tokenizer([t], [p], **kwargs)).logits.numpy()[0] for t, p in zip(TEXTS, pairs)]
    return single, np.stack(paired), pairs


# --- tokenization -------------------------------------------------------------------------------

@pytest.mark.parametrize("max_length", [None, 16])
def test_encoder_matches_autotokenizer(onnx_dir, max_length):
    from transformers import AutoTokenizer

    from kdcompress.runtime import Predictor

    predictor = Predictor(onnx_dir, max_length=max_length)
    reference = AutoTokenizer.from_pretrained(onnx_dir)
    limit = max_length or 128  # the tiny model has 128 positions
    assert predictor.encoder.max_length == limit
    pairs = [p or "" for p in PAIRS]
    for args in ((TEXTS,), (TEXTS, pairs)):
        ours = predictor.encoder(*args)
        theirs = reference(*args, padding=True, truncation=True, max_length=limit, return_tensors="np")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{name} with {len(args)} inputs")


# --- predictions --------------------------------------------------------------------------------

def test_predictions_match_pytorch(onnx_dir, torch_reference):
    from kdcompress.runtime import Predictor

    single, paired, pairs = torch_reference
    predictor = Predictor(onnx_dir, threads=1, batch_size=4)
    assert predictor.runtime == "onnxruntime"
    np.testing.assert_allclose(predictor.logits(TEXTS), single, atol=1e-4)
    np.testing.assert_allclose(predictor.logits(TEXTS, pairs), paired, atol=1e-4)

    predictions = predictor.predict(TEXTS, pairs)
    config = json.loads((onnx_dir / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    assert [p.label for p in predictions] == [labels[i] for i in paired.argmax(-1)]
    for prediction in predictions:
        assert list(prediction.probabilities) == labels
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.score == max(prediction.probabilities.values())
    assert predictor.predict([]) == []


def test_mixed_pairs_encode_missing_pairs_as_single_texts(onnx_dir):
    from kdcompress.runtime import Predictor

    predictor = Predictor(onnx_dir, threads=1)
    mixed = predictor.logits(TEXTS[:3], [PAIRS[0], None, PAIRS[2]])
    np.testing.assert_allclose(mixed[1], predictor.logits([TEXTS[1]])[0], atol=1e-5)
    np.testing.assert_allclose(mixed[0], predictor.logits([TEXTS[0]], [PAIRS[0]])[0], atol=1e-5)


def test_bucketing_preserves_input_order(onnx_dir):
    from kdcompress.runtime import Predictor

    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 3) for i in range(23)]  # lengths out of order
    bucketed = Predictor(onnx_dir, threads=1, batch_size=4)
    widths = []
    run = bucketed.backend.run
    bucketed.backend.run = lambda feed: (widths.append(feed["input_ids"].shape[1]), run(feed))[1]
    one_by_one = Predictor(onnx_dir, threads=1, batch_size=1, sort_by_length=False)

    np.testing.assert_allclose(bucketed.logits(texts), one_by_one.logits(texts), atol=1e-5)
    assert widths == sorted(widths) and len(widths) == 6  # sorted buckets: widths only grow
    assert [p.label for p in bucketed.predict(texts)] == [p.label for p in one_by_one.predict(texts)]


def test_predictor_refuses_bad_input(onnx_dir, tmp_path):
    from kdcompress.runtime import Predictor

    predictor = Predictor(onnx_dir, threads=1)
    with pytest.raises(KDCompressError, match="list of texts"):
        predictor.predict("one text")
    with pytest.raises(KDCompressError, match="text_pairs"):
        predictor.predict(["a", "b"], ["only one"])
    with pytest.raises(KDCompressError, match="not a string"):
        predictor.predict(["a", 3])
    with pytest.raises(KDCompressError, match="does not exist"):
        Predictor(tmp_path / "missing")
    with pytest.raises(KDCompressError, match="neither model.onnx nor openvino_model.xml"):
        Predictor(tmp_path)
    with pytest.raises(KDCompressError, match="unknown runtime"):
        Predictor(onnx_dir, runtime="tensorrt")


def test_predictor_imports_neither_torch_nor_transformers(onnx_dir, tmp_path):
    (tmp_path / "in.txt").write_text("one\ntwo\n", encoding="utf-8")
    code = f"""
import sys
from kdcompress.runtime import Predictor, predict_file
print(Predictor({str(onnx_dir)!r}, threads=1).predict(["a sentence"])[0].label)
predict_file(model_dir={str(onnx_dir)!r}, input={str(tmp_path / 'in.txt')!r}, out={str(tmp_path / 'o.jsonl')!r},
             progress=False)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "nncf"))
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


# --- predict's input and output -----------------------------------------------------------------

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_read_inputs_reports_bad_rows_by_line(tmp_path):
    from kdcompress.runtime import BadRow, InputRow, read_inputs

    txt = _write(tmp_path / "a.txt", b"\xef\xbb\xbffirst\n\nthird\r\n\xff\xfe broken\nlast")
    rows = list(read_inputs(txt))
    assert rows[0] == InputRow(1, "first") and rows[1] == InputRow(3, "third") and rows[3] == InputRow(5, "last")
    assert isinstance(rows[2], BadRow) and rows[2].line == 4 and "UTF-8" in rows[2].reason

    tsv = _write(tmp_path / "a.tsv", b"text\tpair\nonly text\na\tb\tc\n\tno text\n")
    rows = list(read_inputs(tsv))
    assert rows[:2] == [InputRow(1, "text", "pair"), InputRow(2, "only text")]
    assert [(r.line, type(r).__name__) for r in rows[2:]] == [(3, "BadRow"), (4, "BadRow")]
    assert "3 tab-separated columns" in rows[2].reason

    jsonl = _write(tmp_path / "a.jsonl", "\n".join([
        '{"text": "ok", "text_pair": "p", "id": "x1"}', '{"text": "unfinished"', '{"text_pair": "no text"}',
        '{"text": 5}', '["a list"]', '{"text": "fine", "text_pair": null}']).encode())
    rows = list(read_inputs(jsonl))
    assert rows[0] == InputRow(1, "ok", "p", "x1") and rows[-1] == InputRow(6, "fine")
    reasons = {r.line: r.reason for r in rows if isinstance(r, BadRow)}
    assert sorted(reasons) == [2, 3, 4, 5]
    assert "not valid JSON" in reasons[2] and '"text"' in reasons[3] and "not a string" in reasons[4]


def test_stdin_format_is_sniffed_and_unknown_suffixes_refused(tmp_path):
    from kdcompress.runtime.inputs import InputRow, parse_lines, read_inputs

    assert list(parse_lines([b"\n", b'{"text": "a"}\n'], "auto")) == [InputRow(2, "a")]
    assert list(parse_lines([b"a\tb\n"], "auto")) == [InputRow(1, "a", "b")]
    assert list(parse_lines([b"plain\n"], "auto")) == [InputRow(1, "plain")]
    with pytest.raises(KDCompressError, match="--input-format"):
        read_inputs(tmp_path / "data.csv")
    with pytest.raises(KDCompressError, match="not found"):
        read_inputs(tmp_path / "missing.txt")


def test_predict_file_writes_jsonl_atomically_and_reports_bad_rows(onnx_dir, tmp_path):
    from kdcompress.runtime import PredictConfig, Predictor, predict_file

    source = _write(tmp_path / "in.jsonl", "\n".join(
        [json.dumps({"text": t, "text_pair": p, "id": i}) for i, (t, p) in enumerate(zip(TEXTS, PAIRS))]
        + ["{broken", '{"text": 1}']).encode())
    out = tmp_path / "out" / "predictions.jsonl"
    config = PredictConfig(model_dir=str(onnx_dir), input=str(source), out=str(out), threads=1, batch_size=3,
                           chunk_size=4, include_text=True, progress=False)
    result = predict_file(config)
    assert result.rows == len(TEXTS) and result.backend == "onnxruntime"
    assert [(b.line, b.reason.split(" ")[0]) for b in result.bad_rows] == [(8, "not"), (9, '"text"')]
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in lines] == list(range(1, len(TEXTS) + 1))
    assert [r["id"] for r in lines] == list(range(len(TEXTS)))
    expected = Predictor(onnx_dir, threads=1).predict(TEXTS, PAIRS)
    assert [r["label"] for r in lines] == [p.label for p in expected]
    assert lines[0]["text"] == TEXTS[0] and "text_pair" not in lines[2]
    assert result.rows_per_second > 0 and result.to_json()["bad_rows"][0]["line"] == 8

    with pytest.raises(KDCompressError, match="already exists"):
        predict_file(config)
    assert predict_file(config, overwrite=True).rows == len(TEXTS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.jsonl"]  # no temporary files left


def test_predict_file_leaves_nothing_when_it_fails(onnx_dir, tmp_path, monkeypatch):
    from kdcompress.runtime import predict_file
    from kdcompress.runtime.predictor import Predictor

    source = _write(tmp_path / "in.txt", b"a\nb\n")

    def boom(self, texts, text_pairs=None):
        raise RuntimeError("killed")

    monkeypatch.setattr(Predictor, "predict", boom)
    with pytest.raises(RuntimeError):
        predict_file(model_dir=str(onnx_dir), input=str(source), out=str(tmp_path / "o.jsonl"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_predict_config_checks_its_settings():
    from kdcompress.runtime import PredictConfig

    with pytest.raises(KDCompressError, match="--runtime"):
        PredictConfig.from_dict({"model_dir": "m", "out": "o.jsonl", "runtime": "tensorrt"})
    with pytest.raises(KDCompressError, match="--batch-size"):
        PredictConfig.from_dict({"model_dir": "m", "out": "o.jsonl", "batch_size": 0})
    with pytest.raises(KDCompressError, match="--out"):
        PredictConfig.from_dict({"model_dir": "m"})
    assert PredictConfig.from_dict({"model_dir": "m", "out": "o.jsonl", "threads": "2"}).threads == 2


# --- OpenVINO -----------------------------------------------------------------------------------

def test_missing_openvino_names_the_extra(onnx_dir, tiny_classifier_dir, tmp_path, monkeypatch):
    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(KDCompressError, match=r"pip install 'kdcompress\[openvino\]'") as info:
        Predictor(onnx_dir, runtime="openvino")
    assert "\n" not in str(info.value)
    with pytest.raises(KDCompressError, match=r"pip install 'kdcompress\[openvino\]'"):
        export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "ov", runtime="openvino", progress=False)


@NEEDS_OPENVINO
def test_openvino_fp32_matches_onnxruntime(onnx_dir, tiny_classifier_dir, data_dir, tmp_path):
    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    pairs = [p or "" for p in PAIRS]
    ort = Predictor(onnx_dir, threads=1).logits(TEXTS, pairs)
    # OpenVINO reading the ONNX file itself.
    np.testing.assert_allclose(Predictor(onnx_dir, threads=1, runtime="openvino").logits(TEXTS, pairs), ort, atol=1e-4)

    out = export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "ov", runtime="openvino", langs="en,de",
                      data_dir=data_dir, check_samples=8, progress=False).out
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json", "export.json"} <= \
        {p.name for p in out.iterdir()}
    report = json.loads((out / "export.json").read_text())
    assert report["runtime"] == "openvino" and report["precision"] == "fp32"
    assert report["openvino"]["inference_precision"] in ("f32", "bf16")
    assert report["openvino"]["inference_precision_reason"]
    shutil.copytree(out, tmp_path / "moved")  # self-contained: nothing points back at the ONNX directory
    predictor = Predictor(tmp_path / "moved", threads=1, precision="f32")
    assert predictor.runtime == "openvino"
    np.testing.assert_allclose(predictor.logits(TEXTS, pairs), ort, atol=1e-4)
    recorded = Predictor(tmp_path / "moved", threads=1)  # the recorded precision (bf16 on AMX): close, not exact
    assert recorded.backend.precision == report["openvino"]["inference_precision"]
    np.testing.assert_allclose(recorded.logits(TEXTS, pairs), ort, atol=0.05)


@NEEDS_OPENVINO
def test_openvino_compile_cache_is_reused_and_changes_nothing(onnx_dir, tmp_path):
    from kdcompress.runtime import Predictor

    cache = tmp_path / "cache" / "openvino"  # made on first use
    plain = Predictor(onnx_dir, threads=1, runtime="openvino", precision="f32").logits(TEXTS)
    first = Predictor(onnx_dir, threads=1, runtime="openvino", precision="f32", cache_dir=cache)
    blobs = sorted(cache.iterdir())
    assert blobs, "OpenVINO wrote no compiled model to the cache"
    second = Predictor(onnx_dir, threads=1, runtime="openvino", precision="f32", cache_dir=cache)
    assert first.backend.compiled.get_property("LOADED_FROM_CACHE") is False
    assert second.backend.compiled.get_property("LOADED_FROM_CACHE") is True  # nothing compiled anew
    assert sorted(cache.iterdir()) == blobs
    np.testing.assert_array_equal(first.logits(TEXTS), plain)
    np.testing.assert_array_equal(second.logits(TEXTS), plain)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(KDCompressError, match="cache folder"):
        Predictor(onnx_dir, runtime="openvino", cache_dir=tmp_path / "a-file" / "sub")


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=NEEDS_OPENVINO)])
def test_tokenizer_errors_win_over_model_errors(onnx_dir, tmp_path, backend):
    """On OpenVINO the tokenizer loads in a thread beside the runtime; either way, when both fail, the
    tokenizer's error is the one raised, and a good tokenizer leaves the model's error."""
    from kdcompress.runtime import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(onnx_dir, broken)
    (broken / "tokenizer.json").write_text("not a tokenizer")
    (broken / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(KDCompressError, match="tokenizer.json cannot be read"):
        Predictor(broken, runtime=backend)
    shutil.copy(onnx_dir / "tokenizer.json", broken / "tokenizer.json")
    with pytest.raises(KDCompressError, match="ONNX Runtime cannot load" if backend == "onnxruntime"
                       else "OpenVINO cannot load"):
        Predictor(broken, runtime=backend)


@NEEDS_OPENVINO
def test_openvino_int8_with_accuracy_control(onnx_dir, tiny_classifier_dir, data_dir, tmp_path):
    pytest.importorskip("nncf", reason="nncf is not installed: pip install 'kdcompress[openvino]'")
    from kdcompress import export_onnx
    from kdcompress.runtime import Predictor

    fp32 = Predictor(onnx_dir, threads=1)
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(32)]
    out = export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "ov8", runtime="openvino", accuracy_goal=0.5,
                      task="sib200", langs="en,de", data_dir=data_dir, calibration_samples=16, check_samples=8,
                      eval_samples=16, progress=False).out
    report = json.loads((out / "export.json").read_text())
    assert report["precision"] == "int8"
    assert report["quantization"]["method"] == "nncf.quantize_with_accuracy_control"
    assert report["accuracy"]["goal_met"] and set(report["accuracy"]["int8_accuracy"]) == {"en", "de"}
    int8 = Predictor(out, threads=1)
    agreement = (int8.logits(texts).argmax(-1) == fp32.logits(texts).argmax(-1)).mean()
    assert agreement >= 0.9


def test_openvino_refuses_an_ort_int8_export(onnx_dir, tmp_path):
    from kdcompress.deploy.openvino import onnx_source

    int8 = tmp_path / "int8"
    int8.mkdir()
    shutil.copyfile(onnx_dir / "model.onnx", int8 / "model.onnx")
    (int8 / "export.json").write_text(json.dumps({"precision": "int8"}))
    with pytest.raises(KDCompressError, match="fp32 export"):
        onnx_source(int8)
    assert onnx_source(onnx_dir / "model.onnx") == (onnx_dir / "model.onnx", onnx_dir)


def test_kill_9_during_predict_leaves_no_output_and_the_rerun_cleans_up(onnx_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"Satz Nummer {i} über das Wetter in Berlin.\n" for i in range(200_000)))
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "kdcompress", "predict", str(onnx_dir), "--input", str(texts), "--out", str(out),
               "--threads", "1", "--chunk-size", "512"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.jsonl.tmp-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not out.exists() and any(name.startswith(".out.jsonl.tmp-") for name in left), left
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sum(1 for _ in out.open()) == 200_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "texts.txt"]
