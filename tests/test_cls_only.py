"""The export graph whose last layer computes the [CLS] position only (deploy/cls_only.py): same logits as the
whole model, on padded batches, for BERT and DistilBERT; other models keep the whole layer and say why."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdcompress.deploy.cls_only import cls_only_module, unsupported_reason  # noqa: E402

LABELS = dict(id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})


def _bert(layers: int = 2, **config):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=layers,
                                                    num_attention_heads=4, intermediate_size=64,
                                                    max_position_embeddings=64, **config, **LABELS)).eval()


def _distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=300, dim=32, n_layers=2, n_heads=4,
                                                                hidden_dim=64, max_position_embeddings=64,
                                                                **LABELS)).eval()


def _padded_batch(names):
    ids = torch.randint(5, 300, (3, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padded rows: the [CLS] query must not attend to padding
    mask[2, 3:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: feed[n] for n in names}


@pytest.mark.parametrize("make,names", [
    (lambda: _bert(2), ["input_ids", "attention_mask", "token_type_ids"]),
    (lambda: _bert(1), ["input_ids", "attention_mask", "token_type_ids"]),
    (_distilbert, ["input_ids", "attention_mask"]),
])
def test_logits_match_the_whole_model(make, names):
    model = make()
    feed = _padded_batch(names)
    with torch.no_grad():
        expected = model(**feed).logits
        got = cls_only_module(model, names)(*feed.values())
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the model itself is left whole: the pruned view shares its weights, not its layer list
    assert len(model.base_model.encoder.layer if hasattr(model.base_model, "encoder")
               else model.base_model.transformer.layer) == model.config.num_hidden_layers


def test_other_models_keep_the_whole_layer():
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    xlmr = XLMRobertaForSequenceClassification(XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                                num_attention_heads=4, intermediate_size=64))
    assert "XLMRobertaForSequenceClassification" in unsupported_reason(xlmr, ["input_ids", "attention_mask"])
    assert "relative" in unsupported_reason(_bert(position_embedding_type="relative_key"),
                                            ["input_ids", "attention_mask"])
    assert "attention_mask" in unsupported_reason(_bert(), ["input_ids"])
    with pytest.raises(ValueError, match="attention_mask"):
        cls_only_module(_bert(), ["input_ids"])


def test_export_records_the_graph_and_keeps_parity(tmp_path, mbert_vocab_dir, data_dir):
    from transformers import AutoTokenizer

    from kdcompress import export_onnx

    tokenizer = AutoTokenizer.from_pretrained(mbert_vocab_dir)
    model = _bert(2)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    pruned = export_onnx(model_dir=tmp_path / "model", out=tmp_path / "pruned", langs="en,zh", data_dir=data_dir,
                         check_samples=8, progress=False).report
    whole = export_onnx(model_dir=tmp_path / "model", out=tmp_path / "whole", langs="en,zh", data_dir=data_dir,
                        check_samples=8, cls_only_last_layer=False, progress=False).report
    assert pruned["onnx"]["last_layer"]["graph"] == "cls_only"
    assert whole["onnx"]["last_layer"] == {"graph": "full", "reason": "--full-last-layer"}
    assert pruned["check"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert json.loads((tmp_path / "pruned" / "export.json").read_text())["onnx"]["last_layer"]["graph"] == "cls_only"
    # the two graphs agree on a padded batch of new shapes
    import onnxruntime as ort

    feed = {k: v.numpy() for k, v in _padded_batch(["input_ids", "attention_mask", "token_type_ids"]).items()}
    outputs = [ort.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"])
               .run(None, feed)[0] for name in ("pruned", "whole")]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
