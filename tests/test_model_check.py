"""Cheap model-folder checks: a usable tokenizer that fits the model, readable weights, maximum positions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdcompress.errors import KDCompressError
from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable, model_max_positions

MBERT_VOCAB = 119547


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory, mbert_vocab_dir) -> Path:
    """mBERT's tokenizer as save_pretrained writes it (tokenizer.json + tokenizer_config.json)."""
    from transformers import AutoTokenizer

    # from_pretrained, not BertTokenizerFast(vocab_file=...): transformers 5 ignores that keyword.
    folder = tmp_path_factory.mktemp("saved_tokenizer")
    AutoTokenizer.from_pretrained(mbert_vocab_dir).save_pretrained(folder)
    return folder


def _model_dir(tmp_path: Path, saved: Path, vocab_dir: Path, layout: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": MBERT_VOCAB}))
    if layout in ("saved", "no tokenizer_config", "corrupt tokenizer.json"):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(saved / name, folder / name)
    if layout == "no tokenizer_config":
        (folder / "tokenizer_config.json").unlink()
    if layout == "corrupt tokenizer.json":
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    if layout == "vocab.txt":
        for name in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(vocab_dir / name, folder / name)
    if layout == "special tokens only":
        (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
        (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    if layout == "bad tokenizer_config":
        shutil.copy(saved / "tokenizer.json", folder / "tokenizer.json")
        (folder / "tokenizer_config.json").write_text("{not json")
    return folder


@pytest.mark.parametrize("layout,vocab_size,error", [
    ("saved", MBERT_VOCAB, None),
    ("saved", None, None),
    ("saved", MBERT_VOCAB + 64, None),  # an embedding padded past the tokenizer is fine
    ("vocab.txt", MBERT_VOCAB, None),
    ("config only", MBERT_VOCAB, r"model .*model has no tokenizer files \(tokenizer.json or vocab.txt\); "
                                 r"save the tokenizer beside the model \(tokenizer.save_pretrained\)"),
    ("no tokenizer_config", MBERT_VOCAB, r"has tokenizer.json but no tokenizer_config.json; save the tokenizer"),
    ("bad tokenizer_config", MBERT_VOCAB, r"tokenizer_config.json is unreadable \(JSONDecodeError"),
    ("corrupt tokenizer.json", MBERT_VOCAB, r"its tokenizer does not load \(.*\); save the tokenizer beside"),
    ("special tokens only", None, r"its tokenizer holds only 5 tokens \(0 besides special tokens\), so nearly every "
                                  r"word would become the unknown token"),
    ("saved", 1000, r"its tokenizer has 119547 tokens but the model's vocabulary has only 1000 "
                    r"\(config.json vocab_size\); save the tokenizer the model was trained with beside it"),
    ("saved", 250037, r"its tokenizer has 119547 tokens, far fewer than the model's 250037 .* another model's"),
])
def test_check_model_dir_tokenizer(tmp_path, saved_tokenizer, mbert_vocab_dir, layout, vocab_size, error):
    folder = _model_dir(tmp_path, saved_tokenizer, mbert_vocab_dir, layout)
    if error is None:
        tokenizer = check_model_dir_tokenizer(folder, vocab_size)
        assert len(tokenizer) == MBERT_VOCAB
        assert tokenizer.convert_ids_to_tokens(tokenizer("Hallo Welt")["input_ids"])[1:-1] != ["[UNK]", "[UNK]"]
    else:
        with pytest.raises(KDCompressError, match=error) as info:
            check_model_dir_tokenizer(folder, vocab_size)
        assert "\n" not in str(info.value)


def test_tokenizer_check_names_the_role_and_refuses_non_folders(tmp_path):
    with pytest.raises(KDCompressError, match=r"^teacher .*nowhere does not exist; pass a model folder"):
        check_model_dir_tokenizer(tmp_path / "nowhere", what="teacher")
    (tmp_path / "file").write_text("x")
    with pytest.raises(KDCompressError, match=r"^--finetuned-teacher .*file is a file; pass a model folder"):
        check_model_dir_tokenizer(tmp_path / "file", what="--finetuned-teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDCompressError, match=r"^teacher .*empty has no tokenizer files"):
        check_model_dir_tokenizer(tmp_path / "empty", 100, what="teacher")


# --- weights -----------------------------------------------------------------------------------

def _weights(folder: Path, layout: str) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    tensors = {"embeddings.weight": torch.randn(64, 16), "classifier.bias": torch.zeros(7)}
    if layout in ("safetensors", "truncated", "trailing bytes"):
        save_file(tensors, folder / "model.safetensors")
        data = (folder / "model.safetensors").read_bytes()
        if layout == "truncated":
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        if layout == "trailing bytes":
            (folder / "model.safetensors").write_bytes(data + b"\0" * 7)
    elif layout == "empty file":
        (folder / "model.safetensors").write_bytes(b"")
    elif layout == "not safetensors":
        (folder / "model.safetensors").write_text("<html>404 Not Found</html>" * 3)
    elif layout == "no tensors":
        save_file({}, folder / "model.safetensors")
    elif layout.startswith("sharded"):
        save_file({"embeddings.weight": tensors["embeddings.weight"]}, folder / "model-00001-of-00002.safetensors")
        save_file({"classifier.bias": tensors["classifier.bias"]}, folder / "model-00002-of-00002.safetensors")
        index = {"metadata": {}, "weight_map": {"embeddings.weight": "model-00001-of-00002.safetensors",
                                                "classifier.bias": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        if layout == "sharded, one missing":
            (folder / "model-00002-of-00002.safetensors").unlink()
        if layout == "sharded, one truncated":
            shard = folder / "model-00001-of-00002.safetensors"
            shard.write_bytes(shard.read_bytes()[:100])
        if layout == "sharded, corrupt index":
            (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    elif layout == "pytorch_model.bin":
        (folder / "pytorch_model.bin").write_bytes(b"left to the loader")
    elif layout == "onnx":
        (folder / "model.onnx").write_bytes(b"onnx")
    return folder


@pytest.mark.parametrize("layout,error", [
    ("safetensors", None),
    ("sharded", None),
    ("pytorch_model.bin", None),
    ("truncated", r"model .*: model.safetensors is truncated or corrupt \(SafetensorError: .*\); copy it again or "
                  r"save the model again \(model.save_pretrained\)"),
    ("trailing bytes", r"model.safetensors is truncated or corrupt"),
    ("empty file", r"model.safetensors is truncated or corrupt"),
    ("not safetensors", r"model.safetensors is truncated or corrupt"),
    ("no tensors", r"model.safetensors holds no tensors"),
    ("sharded, one missing", r"weight shard model-00002-of-00002.safetensors listed in model.safetensors.index.json "
                             r"is missing"),
    ("sharded, one truncated", r"model-00001-of-00002.safetensors is truncated or corrupt"),
    ("sharded, corrupt index", r"model.safetensors.index.json is corrupt"),
    ("onnx", r"holds an ONNX model, not PyTorch weights \(model.safetensors\); pass the model folder it was exported"),
    ("nothing", r"has no model weights \(model.safetensors\); pass a folder saved with model.save_pretrained"),
])
def test_check_weights_readable(tmp_path, layout, error):
    folder = _weights(tmp_path / "model", layout)
    if error is None:
        assert check_weights_readable(folder) is None
    else:
        with pytest.raises(KDCompressError, match=error) as info:
            check_weights_readable(folder)
        assert "\n" not in str(info.value)


def test_weights_check_names_the_role(tmp_path):
    folder = _weights(tmp_path / "teacher", "truncated")
    with pytest.raises(KDCompressError, match=r"^teacher .*teacher: model.safetensors is truncated"):
        check_weights_readable(folder, what="teacher")


# --- positions ---------------------------------------------------------------------------------

def _config(kind: str):
    from transformers import BertConfig, DistilBertConfig, XLMRobertaConfig

    return {
        "bert": lambda: BertConfig(),
        "bert 128": lambda: BertConfig(max_position_embeddings=128),
        "distilbert": lambda: DistilBertConfig(),
        "xlm-roberta": lambda: XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1),
        "roberta dict": lambda: {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
        "longformer dict": lambda: {"model_type": "longformer", "max_position_embeddings": 4098, "pad_token_id": 1},
        "no positions": lambda: {"model_type": "bert"},
    }[kind]()


@pytest.mark.parametrize("kind,positions", [
    ("bert", 512), ("bert 128", 128), ("distilbert", 512), ("xlm-roberta", 512), ("roberta dict", 512),
    ("longformer dict", 4096), ("no positions", 512),
])
def test_model_max_positions(kind, positions):
    assert model_max_positions(_config(kind)) == positions


@pytest.mark.parametrize("model", ["bert-base-multilingual-cased", "multilingual-e5-small",
                                   "distilbert-base-multilingual-cased", "Multilingual-MiniLM-L12-H384"])
def test_model_max_positions_of_the_shared_configs(data_dir, model):
    from transformers import AutoConfig

    path = data_dir / "models" / model
    if not (path / "config.json").is_file():
        pytest.skip(f"{path}/config.json not found")
    assert model_max_positions(AutoConfig.from_pretrained(path)) == 512
