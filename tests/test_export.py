"""`kdcompress export-onnx`: parity, dynamic axes, int8, fusion report, accuracy-aware search, errors.

Tiny random models only (mBERT's real vocabulary, a handful of hidden units): they check the
mechanics, never accuracy. Speed is measured by benchmarks/export_vs_optimum.py, not here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcompress.errors import KDCompressError

SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


def _save_classifier(out: Path, tokenizer, *, model_type: str = "bert", seed: int = 0, **config) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, \
        DistilBertForSequenceClassification

    torch.manual_seed(seed)
    labels = dict(id2label=dict(enumerate(SIB_LABELS)), label2id={l: i for i, l in enumerate(SIB_LABELS)})
    if model_type == "distilbert":
        cfg = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                               max_position_embeddings=128, **labels)
        model = DistilBertForSequenceClassification(cfg)
    else:
        cfg = BertConfig(vocab_size=len(tokenizer), **{**TINY, **config}, **labels)
        model = BertForSequenceClassification(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def mbert_tokenizer(mbert_vocab_dir):
    from transformers import AutoTokenizer

    # Loaded from the folder (not BertTokenizerFast(vocab_file=...), which transformers 5 ignores).
    tokenizer = AutoTokenizer.from_pretrained(mbert_vocab_dir)
    assert len(tokenizer) > 100_000
    return tokenizer


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, mbert_tokenizer) -> Path:
    return _save_classifier(tmp_path_factory.mktemp("tiny_bert"), mbert_tokenizer)


def _xlmr_style_tokenizer():
    """A small SentencePiece-style (Unigram) tokenizer loaded as XLM-R's: no token_type_ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    pieces = "▁the ▁a ▁of ▁and ▁in ▁to ▁is ▁der ▁die ▁und ▁le ▁la ▁de ▁el".split()
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzäöüéèàçñ.,!?'-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789▁"))
    vocab = [(s, 0.0) for s in specials] + [(p, -2.0 - i / 100) for i, p in enumerate(pieces)]
    vocab += [(c, -10.0) for c in chars]
    backend = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory, classifier_dir, data_dir) -> Path:
    from kdcompress import export_onnx

    out = tmp_path_factory.mktemp("exports") / "fp32"
    result = export_onnx(model_dir=classifier_dir, out=out, langs="en,de,zh", data_dir=data_dir, check_samples=12,
                         progress=False)
    assert result.out == out and result.precision == "fp32" and result.goal_met  # no goal asked: met
    assert json.loads(json.dumps(result.report, default=str)) == _report(out)  # the result is export.json
    return out


@pytest.fixture(scope="module")
def int8_fused_export(tmp_path_factory, classifier_dir, data_dir) -> Path:
    from kdcompress import export_onnx

    out = tmp_path_factory.mktemp("exports") / "int8_fused"
    result = export_onnx(model_dir=classifier_dir, out=out, optimize=True, quantize="dynamic", langs="en,ar,hi",
                         data_dir=data_dir, check_samples=12, progress=False)
    assert result.precision == "int8" and result.goal_met
    return result.out


def _report(out: Path) -> dict:
    return json.loads((out / "export.json").read_text(encoding="utf-8"))


def _session(out: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def _torch_logits(model_dir: Path, encoded: dict) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
    with torch.no_grad():
        return model(**{n: torch.as_tensor(encoded[n]) for n in names}).logits.numpy()


# --- fp32 export ----------------------------------------------------------------------------

def test_fp32_export_matches_pytorch_and_is_self_contained(fp32_export, classifier_dir):
    report = _report(fp32_export)
    files = {p.name for p in fp32_export.iterdir()}
    assert {"model.onnx", "model.onnx_data", "config.json", "tokenizer.json", "tokenizer_config.json",
            "export.json"} <= files
    assert report["files"]["weights"] == "model.onnx_data"  # memory-mapped by ONNX Runtime when served
    assert (fp32_export / "model.onnx_data").stat().st_mode & 0o777 == (fp32_export / "model.onnx").stat().st_mode & 0o777
    assert not any(name.startswith(".") for name in os.listdir(fp32_export.parent))  # no temp leftovers
    assert json.loads((fp32_export / "config.json").read_text())["id2label"]["1"] == "travel"
    assert report["onnx"]["opset"] == 17
    assert [i["name"] for i in report["onnx"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["onnx"]["inputs"][0]["shape"] == ["batch_size", "sequence_length"]
    check = report["check"]
    assert check["languages"] == ["en", "de", "zh"]
    assert check["final"]["max_abs_logit_diff"] <= 1e-4
    assert check["final"]["min_argmax_agreement"] == 1.0
    assert set(check["final"]["per_language"]) == {"en", "de", "zh"}
    assert report["sizes"]["model_vs_fp32"] == pytest.approx(1.0, rel=0.05)  # graph + weights file, page-aligned
    assert report["op_counts"]["model"]["MatMul"] >= 12
    assert report["precision"] == "fp32" and report["cpu"]["arch"]
    assert report["sentencepiece"] == {"written": False,
                                       "why": "the tokenizer model is WordPiece, not a Unigram without byte fallback"}


def test_moved_export_still_finds_its_weights(fp32_export, tmp_path, mbert_tokenizer):
    """The weights file is named relative to model.onnx: the directory can be copied anywhere."""
    from kdcompress.deploy.onnx_feed import onnx_feed

    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(fp32_export, moved)
    encoded = mbert_tokenizer(["Ein Satz."], return_tensors="np")
    original, copy = _session(fp32_export), _session(moved)
    np.testing.assert_array_equal(copy.run(["logits"], onnx_feed(copy, encoded))[0],
                                  original.run(["logits"], onnx_feed(original, encoded))[0])


def test_dynamic_axes_run_other_batches_and_lengths(fp32_export, classifier_dir, mbert_tokenizer):
    from kdcompress.deploy.onnx_feed import onnx_feed

    session = _session(fp32_export)
    for texts in (["Ein Satz."] * 3, ["A much longer sentence " * 12, "short"]):  # batch 3 / len ~5, batch 2 / ~80
        encoded = mbert_tokenizer(texts, padding=True, return_tensors="np")
        onnx_out = session.run(["logits"], onnx_feed(session, encoded))[0]
        assert onnx_out.shape == (len(texts), len(SIB_LABELS))
        assert np.abs(onnx_out - _torch_logits(classifier_dir, encoded)).max() <= 1e-4


def test_output_dir_loads_like_a_model_dir(fp32_export):
    # What Optimum's ORTModelForSequenceClassification reads: model.onnx + config.json + tokenizer.
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(fp32_export).num_labels == len(SIB_LABELS)
    assert "token_type_ids" in AutoTokenizer.from_pretrained(fp32_export)("Hallo")


# --- optimize + int8 ------------------------------------------------------------------------

def test_fusion_report_and_dynamic_int8(int8_fused_export):
    report = _report(int8_fused_export)
    fused = report["optimize"]["fused"]
    # the last layer runs on [CLS] alone (cls_only.py): one query, nothing for a whole-sequence Attention
    assert report["onnx"]["last_layer"]["graph"] == "cls_only"
    assert fused["Attention"] == 1 and fused["SkipLayerNormalization"] == 4
    assert fused["BiasGelu"] == 2 and fused["EmbedLayerNormalization"] == 1
    assert report["optimize"]["missing"] == {}
    assert report["optimize"]["check"]["max_abs_logit_diff"] <= 1e-4

    quant = report["quantization"]
    assert quant["mode"] == "dynamic" and quant["weight_type"] == "QInt8"
    assert quant["embeddings"] == "int8"
    assert "reduce_range" in quant and quant["reason"]
    ops = report["op_counts"]["model"]
    assert ops.get("QAttention") == 1 and ops.get("QEmbedLayerNormalization") == 1
    assert "MatMulInteger" in ops
    # The embedding table is most of this model; int8 tables bring the file near a quarter.
    assert report["sizes"]["model_vs_fp32"] < 0.3
    final = report["check"]["final"]
    assert final["min_argmax_agreement"] >= 0.9
    assert final["max_abs_logit_diff"] < 0.05


def test_quantized_model_runs_on_new_shapes(int8_fused_export, mbert_tokenizer):
    from kdcompress.deploy.onnx_feed import onnx_feed

    session = _session(int8_fused_export)
    encoded = mbert_tokenizer(["Das ist gut.", "これはテストです。", "Ceci est un test un peu plus long."],
                              padding=True, return_tensors="np")
    assert session.run(["logits"], onnx_feed(session, encoded))[0].shape == (3, len(SIB_LABELS))


def test_static_int8_and_fp32_embeddings(tmp_path, classifier_dir, data_dir):
    from kdcompress import export_onnx

    from kdcompress.deploy.config import ExportConfig

    config = ExportConfig(model_dir=str(classifier_dir), out=str(tmp_path / "static"), quantize="static",
                          calibration_data="sib200:en", calibration_samples=16, keep_embeddings_fp32=True,
                          langs=["en", "sw"], data_dir=str(data_dir), check_samples=8, progress=False)
    report = _report(export_onnx(config).out)  # a whole ExportConfig works as well as keywords
    quant = report["quantization"]
    assert quant["mode"] == "static" and quant["quant_format"] == "QDQ"
    assert quant["calibration"] == {"source": "sib200 train en", "examples": 16}
    assert quant["embeddings"].startswith("fp32") and "Gather" not in quant["op_types"]
    ops = report["op_counts"]["model"]
    assert ops.get("QuantizeLinear") and ops.get("DequantizeLinear")
    assert report["sizes"]["model_vs_fp32"] > 0.8  # the fp32 embedding table dominates a tiny model
    assert report["check"]["final"]["min_argmax_agreement"] >= 0.75


# --- accuracy-aware int8 --------------------------------------------------------------------

def test_accuracy_goal_end_to_end(tmp_path, classifier_dir, data_dir):
    from kdcompress import export_onnx

    # --accuracy-goal alone means dynamic int8.
    result = export_onnx(model_dir=classifier_dir, out=tmp_path / "aa", accuracy_goal=0.05, task="sib200",
                         langs="en,th", data_dir=data_dir, eval_samples=24, check_samples=8, max_trials=3,
                         progress=False)
    accuracy = _report(result.out)["accuracy"]
    assert result.goal_met is True and result.precision == "int8"
    assert _report(result.out)["quantization"]["mode"] == "dynamic"
    assert set(accuracy["fp32_accuracy"]) == set(accuracy["int8_accuracy"]) == {"en", "th"}
    assert accuracy["dev"]["samples_per_language"] == {"en": 24, "th": 24}
    assert accuracy["goal_met"] is True
    assert accuracy["worst_drop"] <= 0.05
    # 2 layers x 6 weight MatMuls, pooler + classifier (Gemm, quantized as MatMul), 3 embedding tables.
    ranked = {row["node"]: row["sqnr_db"] for row in accuracy["sensitivity_sqnr_db"]}
    assert len(ranked) == 12 + 2 + 3
    assert "/model/classifier/Gemm_MatMul" in ranked and "/model/bert/embeddings/word_embeddings/Gather" in ranked
    assert list(ranked.values()) == sorted(ranked.values())  # most sensitive (lowest SQNR) first
    assert 1 <= len(accuracy["trials"]) <= 3


def _fake_search(tmp_path, accuracy_by_fallback, goal=0.01, max_trials=10):
    from kdcompress.deploy import int8_search as q

    ranked = [(q.QuantCandidate(f"n{i}", "MatMul", f"w{i}", f"x{i}"), float(i)) for i in range(16)]
    quantized = []

    def quantize(excluded, path):
        quantized.append(len(excluded))
        Path(path).write_text(str(len(excluded)))

    def evaluate(path):
        return {"en": 0.9, "sw": accuracy_by_fallback(int(Path(path).read_text()))}

    result, chosen = q.accuracy_aware_search(goal=goal, ranked=ranked, quantize=quantize, evaluate=evaluate,
                                             reference_accuracy={"en": 0.9, "sw": 0.8}, workdir=tmp_path,
                                             max_trials=max_trials)
    return result, chosen, quantized


def test_search_bisects_to_fewest_fallbacks(tmp_path):
    # sw recovers once 5 or more operators are fp32: 0, 1, 2, 4, 8 then bisect 4..8 -> 6, 5.
    result, chosen, tried = _fake_search(tmp_path, lambda k: 0.8 if k >= 5 else 0.7)
    assert result.goal_met and len(result.best.fallback_nodes) == 5
    assert result.best.fallback_nodes == ["n0", "n1", "n2", "n3", "n4"]  # most sensitive first
    assert tried == [0, 1, 2, 4, 8, 6, 5]
    assert chosen.read_text() == "5" and len(list(tmp_path.glob("trial_*.onnx"))) == 1


def test_search_keeps_best_model_when_goal_unreachable(tmp_path):
    result, chosen, tried = _fake_search(tmp_path, lambda k: 0.7 + 0.002 * k)
    assert not result.goal_met
    assert max(tried) <= 8  # never more than half the operators back to fp32
    assert result.best.worst_drop == pytest.approx(0.1 - 0.016)
    assert chosen.exists()
    summary = result.to_json()
    assert summary["goal_met"] is False and summary["worst_language"] == "sw"


def test_cli_exit_status_3_when_goal_missed(tmp_path, monkeypatch, classifier_dir):
    from typer.testing import CliRunner

    import kdcompress.deploy.export as export_module
    from kdcompress.cli import app

    def fake_export(config=None, **overrides):
        out = Path(overrides.get("out") or config.out)
        out.mkdir()
        report = {"accuracy": {"goal_met": False}, "precision": "int8"}
        (out / "export.json").write_text(json.dumps(report))
        return export_module.ExportResult(out=out, report=report, goal_met=False, precision="int8")

    monkeypatch.setattr(export_module, "export_onnx", fake_export)
    result = CliRunner().invoke(app, ["export-onnx", str(classifier_dir), "--out", str(tmp_path / "o"),
                                      "--accuracy-goal", "0.001"])
    assert result.exit_code == 3 and (tmp_path / "o" / "export.json").is_file()


# --- other architectures and tokenizers ------------------------------------------------------

def test_bert_with_xlmr_tokenizer_has_no_token_type_ids(tmp_path, data_dir):
    from kdcompress import export_onnx
    from kdcompress.deploy.onnx_feed import onnx_feed

    tokenizer = _xlmr_style_tokenizer()
    # multilingual-e5 / Multilingual-MiniLM: BERT architecture, two segment embeddings, XLM-R tokenizer.
    model_dir = _save_classifier(tmp_path / "e5like", tokenizer, pad_token_id=1, type_vocab_size=2,
                                 tokenizer_class="XLMRobertaTokenizer")
    out = export_onnx(model_dir=model_dir, out=tmp_path / "out", langs="en,fr", data_dir=data_dir, check_samples=8,
                      progress=False).out
    report = _report(out)
    assert [i["name"] for i in report["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert report["check"]["final"]["max_abs_logit_diff"] <= 1e-4
    session = _session(out)
    encoded = tokenizer(["the dog", "la casa de papel"], padding=True, return_tensors="np")
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert session.run(["logits"], onnx_feed(session, encoded))[0].shape == (2, len(SIB_LABELS))


@pytest.mark.slow
def test_real_multilingual_e5_with_its_xlmr_tokenizer(tmp_path, e5_teacher_dir, data_dir):
    """The known trap, on the real thing: multilingual-e5-small's weights and SentencePiece tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from kdcompress import export_onnx

    model = BertForSequenceClassification.from_pretrained(
        e5_teacher_dir, num_labels=len(SIB_LABELS), id2label=dict(enumerate(SIB_LABELS)),
        label2id={l: i for i, l in enumerate(SIB_LABELS)})  # a random head on the real encoder
    model_dir = tmp_path / "e5_classifier"
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(e5_teacher_dir).save_pretrained(model_dir)
    report = export_onnx(model_dir=model_dir, out=tmp_path / "out", langs="en,th", data_dir=data_dir, check_samples=4,
                         progress=False).report
    assert [i["name"] for i in report["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert report["check"]["final"]["max_abs_logit_diff"] <= 1e-4
    # Its 250k-piece unigram vocabulary gets the quick-loading SentencePiece twin, checked on en and th dev text.
    twin = report["sentencepiece"]
    assert twin["written"] and twin["texts_checked"] >= 2 * 4
    from kdcompress.runtime import Predictor
    from kdcompress.runtime.sentencepiece_tokenizer import SentencePieceTokenizer

    assert isinstance(Predictor(tmp_path / "out").encoder.tokenizer, SentencePieceTokenizer)


def test_xlm_roberta_exports_and_reports_unfused_embeddings(tmp_path, data_dir):
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from kdcompress import export_onnx

    tokenizer = _xlmr_style_tokenizer()
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), **{**TINY, "max_position_embeddings": 130}, pad_token_id=1,
                              type_vocab_size=1, id2label=dict(enumerate(SIB_LABELS)),
                              label2id={l: i for i, l in enumerate(SIB_LABELS)})
    model_dir = tmp_path / "xlmr"
    XLMRobertaForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    report = export_onnx(model_dir=model_dir, out=tmp_path / "out", optimize=True, langs="en", data_dir=data_dir,
                         check_samples=8, progress=False).report
    assert [i["name"] for i in report["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert report["check"]["final"]["max_abs_logit_diff"] <= 1e-4
    # RoBERTa's cumsum position ids defeat ORT's embedding fusion: reported, not hidden.
    assert report["optimize"]["fused"]["Attention"] == 2
    assert "EmbedLayerNormalization" in report["optimize"]["missing"]


def test_distilbert_exports_without_token_type_ids(tmp_path, mbert_tokenizer, data_dir):
    from kdcompress import export_onnx

    model_dir = _save_classifier(tmp_path / "distil", mbert_tokenizer, model_type="distilbert")
    report = export_onnx(model_dir=model_dir, out=tmp_path / "out", quantize="dynamic", langs="en", data_dir=data_dir,
                         check_samples=8, progress=False).report
    assert [i["name"] for i in report["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert report["check"]["fp32"]["max_abs_logit_diff"] <= 1e-4


def test_no_data_falls_back_to_synthetic_check(tmp_path, classifier_dir, monkeypatch):
    from kdcompress import export_onnx

    monkeypatch.setenv("KDCOMPRESS_DATA_DIR", str(tmp_path))  # a folder without the task's files
    check = export_onnx(model_dir=classifier_dir, out=tmp_path / "out", progress=False).report["check"]
    assert check["source"].startswith("synthetic") and check["fp32"]["max_abs_logit_diff"] <= 1e-4


# --- CPU features -> int8 scheme -------------------------------------------------------------

@pytest.mark.parametrize("arch, flags, reduce_range", [
    ("x86_64", "sse4_2 avx avx2 fma", True),                       # AVX2 without VNNI: u8s8 may saturate
    ("x86_64", "avx2 avx512f avx512bw", True),                      # AVX-512 without VNNI: same
    ("x86_64", "avx2 avx512f avx512bw avx512_vnni", False),
    ("x86_64", "avx2 avx_vnni", False),
    ("aarch64", "fp asimd asimddp", False),
])
def test_int8_scheme_follows_cpu(tmp_path, monkeypatch, arch, flags, reduce_range):
    from kdcompress.deploy import int8_scheme as q

    key = "Features" if arch == "aarch64" else "flags"
    (tmp_path / "cpuinfo").write_text(f"model name\t: Test CPU\n{key}\t\t: {flags}\n")
    monkeypatch.setattr(q.platform, "machine", lambda: arch)
    cpu = q.detect_cpu_features(tmp_path / "cpuinfo")
    scheme = q.choose_int8_scheme(cpu, "dynamic")
    assert scheme.weight_type == "QInt8" and scheme.activation_type == "QUInt8"
    assert scheme.reduce_range is reduce_range and scheme.quant_format == "QOperator"
    static = q.choose_int8_scheme(cpu, "static")
    assert static.quant_format == "QDQ"
    assert static.activation_type == ("QInt8" if arch == "aarch64" else "QUInt8")


# --- bad input: one line, non-zero exit, nothing written --------------------------------------

def _run_cli(*args: str):
    from typer.testing import CliRunner

    from kdcompress.cli import app

    return CliRunner().invoke(app, ["export-onnx", *args])


def _assert_clean_failure(result, out: Path, *needles: str):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_error_not_a_model_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_clean_failure(_run_cli(str(tmp_path / "empty"), "--out", str(tmp_path / "o")), tmp_path / "o",
                          "not a model directory")


def test_error_unsupported_architecture(tmp_path):
    (tmp_path / "gpt").mkdir()
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    (tmp_path / "gpt" / "config.json").write_text(json.dumps(config))
    _assert_clean_failure(_run_cli(str(tmp_path / "gpt"), "--out", str(tmp_path / "o")), tmp_path / "o",
                          "unsupported architecture 'gpt2'")


def test_error_not_a_classifier(tmp_path, classifier_dir):
    import shutil

    masked = tmp_path / "mlm"
    shutil.copytree(classifier_dir, masked)
    config = json.loads((masked / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (masked / "config.json").write_text(json.dumps(config))
    _assert_clean_failure(_run_cli(str(masked), "--out", str(tmp_path / "o")), tmp_path / "o",
                          "not a sequence classifier")


def test_error_truncated_weights(tmp_path, classifier_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(classifier_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _assert_clean_failure(_run_cli(str(broken), "--out", str(tmp_path / "o")), tmp_path / "o",
                          "truncated or corrupt")


def test_error_corrupt_config(tmp_path, classifier_dir):
    import shutil

    broken = tmp_path / "badconfig"
    shutil.copytree(classifier_dir, broken)
    (broken / "config.json").write_text('{"model_type": "bert", ')
    _assert_clean_failure(_run_cli(str(broken), "--out", str(tmp_path / "o")), tmp_path / "o", "config.json")


def test_error_existing_out_is_left_alone(tmp_path, classifier_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _run_cli(str(classifier_dir), "--out", str(out))
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_error_bad_options(tmp_path, classifier_dir):
    for args, needle in ((["--quantize", "int4"], "unknown --quantize"),
                         (["--accuracy-goal", "5"], "--accuracy-goal"),
                         (["--calibration-data", "sib200:en"], "--quantize static")):
        result = _run_cli(str(classifier_dir), "--out", str(tmp_path / "o"), *args)
        _assert_clean_failure(result, tmp_path / "o", needle)


def test_failed_parity_check_writes_nothing(tmp_path, monkeypatch, classifier_dir, data_dir):
    import kdcompress.deploy.checks as checks_module
    from kdcompress import export_onnx

    monkeypatch.setattr(checks_module, "FP32_TOLERANCE", -1.0)  # every graph now "fails" the check
    out = tmp_path / "o"
    with pytest.raises(KDCompressError, match="differs from PyTorch"):
        export_onnx(model_dir=classifier_dir, out=out, langs="en", data_dir=data_dir, check_samples=4, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither OUT nor a staging or work directory is left


def test_api_raises_kdcompress_error(tmp_path):
    from kdcompress import export_onnx

    with pytest.raises(KDCompressError, match="does not exist"):
        export_onnx(model_dir=tmp_path / "missing", out=tmp_path / "o", progress=False)


@pytest.mark.parametrize("call, needle", [
    (dict(model_dir="m", out="o", quantise="dynamic"), "unknown export setting(s) quantise"),
    (dict(model_dir="m", out="o", check_samples="many"), "check_samples"),
    (dict(model_dir="m", out="o", optimize="yes"), "optimize"),
    (dict(model_dir="m", out="o", quantize="int4"), "unknown --quantize"),
    (dict(model_dir="m"), "no output directory"),
])
def test_api_bad_settings_are_one_line(tmp_path, monkeypatch, call, needle):
    from kdcompress import export_onnx

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KDCompressError) as caught:
        export_onnx(**call)
    message = str(caught.value)
    assert needle in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_api_a_path_in_place_of_the_config_is_one_line(tmp_path):
    from kdcompress import export_onnx

    with pytest.raises(KDCompressError, match=r"export_onnx\(model_dir=\.\.\., out=") as caught:
        export_onnx(tmp_path / "m", out=tmp_path / "o")
    assert "\n" not in str(caught.value)


def test_static_calibration_keeps_every_batch(tmp_path, classifier_dir, data_dir):
    """128 calibration examples = 16 batches of 8: onnxruntime's CalibMaxIntermediateOutputs=16 dropped them all
    ("No data is collected"); strided calibration merges every batch's ranges."""
    from kdcompress import export_onnx
    from kdcompress.deploy.quantize import calibration_stride

    assert [calibration_stride(n) for n in (16, 13, 12, 1, 30)] == [8, 1, 6, 1, 6]
    result = export_onnx(model_dir=classifier_dir, out=tmp_path / "static", quantize="static", langs="en",
                         data_dir=data_dir, check_samples=4, calibration_samples=128, min_agreement=0, progress=False)
    assert result.report["quantization"]["calibration"]["examples"] == 128
