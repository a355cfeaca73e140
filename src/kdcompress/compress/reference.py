"""The PyTorch fp32 mBERT-base shape that speed-ups are quoted against: mBERT's configuration with random weights.

Random weights have the real latency of their shape (never an accuracy): so the ratio needs no hub and no
download, and it is measured in the same run, interleaved with the models it is compared to."""

from __future__ import annotations

from pathlib import Path

# bert-base-multilingual-cased's config.json
MBERT_BASE_SHAPE = dict(num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                        max_position_embeddings=512, type_vocab_size=2, vocab_size=119547)
REFERENCE_NAME = "mbert-base-shape"


def make_reference(out: Path, tokenizer_dir: str, labels: tuple[str, ...]) -> Path:
    """A random mBERT-base classifier with the teacher's tokenizer, so it reads the same token ids as every other
    model in the run (its embedding grows to the tokenizer's size where that is larger: a gather, not compute)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdcompress.io import atomic_output_dir

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = {**MBERT_BASE_SHAPE, "vocab_size": max(MBERT_BASE_SHAPE["vocab_size"], len(tokenizer))}
    torch.manual_seed(0)
    config = BertConfig(**shape, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)},
                        architectures=["BertForSequenceClassification"])
    with atomic_output_dir(out) as staging:
        BertForSequenceClassification(config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return out
