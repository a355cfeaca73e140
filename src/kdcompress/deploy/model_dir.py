"""The export's input: a Hugging Face-layout sequence classifier, loaded and checked, with the graph inputs
its tokenizer really produces."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdcompress.errors import KDCompressError, describe
from kdcompress.model_config import input_length_limit
from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable
from kdcompress.quiet import quiet_block

SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "kdcompress-static")
GRAPH_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")  # Optimum's order
SAMPLE_TEXTS = ("kdcompress exports this model.",
                "Ein zweiter, etwas längerer Satz, damit die Maske auch Nullen enthält.")
MAX_WEIGHT_BYTES = 1.9e9  # single-file ONNX models are limited to 2 GB
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class SourceModel:
    model_dir: Path
    config: Any
    model: Any
    tokenizer: Any
    input_names: list[str]
    distill_meta: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [str(self.config.id2label[i]) for i in range(self.config.num_labels)]

    @property
    def max_length(self) -> int:
        return max(8, input_length_limit(self.config, getattr(self.tokenizer, "model_max_length", None), cap=512))

    def encode(self, examples: Sequence[Any], *, max_length: int | None = None) -> dict[str, np.ndarray]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_pair for ex in examples]
        kwargs = dict(padding=True, truncation=True, return_tensors="np",
                      max_length=min(max_length or self.max_length, self.max_length))
        if any(p is not None for p in pairs):
            return dict(self.tokenizer(texts, [p or "" for p in pairs], **kwargs))
        return dict(self.tokenizer(texts, **kwargs))


def inspect_model_dir(model_dir: str | os.PathLike) -> SourceModel:
    """Everything `load_model_dir` checks without loading the weights, or one clear line saying why not: the
    config, the architecture, weights that are complete (safetensors header) and a tokenizer that fits the
    model's vocabulary. The returned SourceModel has no `model` yet (see `load_model_dir`)."""
    from transformers import AutoConfig

    from kdcompress.static_model import register_static_student

    register_static_student()  # kdcompress's own static student (--student-layers 0) loads without remote code
    path = Path(model_dir)
    if not path.is_dir():
        raise KDCompressError(f"model directory {path} does not exist; pass a directory made by "
                              "`kdcompress distill` or `save_pretrained`")
    if not (path / "config.json").is_file():
        raise KDCompressError(f"{path} is not a model directory (no config.json); pass a directory made by "
                              "`kdcompress distill` or `save_pretrained`")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
        with quiet_block():
            config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # corrupt JSON, unknown model_type, ...
        raise KDCompressError(f"{path}/config.json cannot be read ({describe(exc)}); re-save the model "
                              "or restore config.json") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise KDCompressError(f"unsupported architecture {config.model_type!r} in {path}; export-onnx handles "
                              f"BERT-family sequence classifiers ({', '.join(SUPPORTED_MODEL_TYPES)})")
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise KDCompressError(f"{path} holds a {architectures[0]}, not a sequence classifier; fine-tune or "
                              "distill it into a classifier (kdcompress distill) before exporting")
    if not any((path / p).is_file() for p in WEIGHT_FILES):
        raise KDCompressError(f"{path} has no model weights (model.safetensors); re-save the model with "
                              "save_pretrained")
    check_weights_readable(path)  # a truncated file: one line now, not after the export started
    with quiet_block():
        # Without tokenizer files transformers 5 builds a 5-token tokenizer from config.json: every word [UNK].
        tokenizer = check_model_dir_tokenizer(path, getattr(config, "vocab_size", None))
    distill_meta = {}
    if (path / "distill.json").is_file():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            distill_meta = json.loads((path / "distill.json").read_text(encoding="utf-8"))
    return SourceModel(path, config, None, tokenizer, [], distill_meta)


def load_model_dir(model_dir: str | os.PathLike, inspected: SourceModel | None = None) -> SourceModel:
    """Load a Hugging Face-layout sequence classifier (checked first by `inspect_model_dir`, unless `inspected`
    is its result), or raise one clear line saying why not."""
    import torch  # noqa: F401  (imported before transformers for a clean error if torch is broken)
    from transformers import AutoModelForSequenceClassification

    source = inspected if inspected is not None else inspect_model_dir(model_dir)
    path = source.model_dir
    weight_files = [p for p in WEIGHT_FILES if (path / p).is_file()]
    try:
        with quiet_block():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation="eager", output_loading_info=True)
    except Exception as exc:  # truncated or corrupt weights, shape mismatches
        raise KDCompressError(f"the weights in {path}/{weight_files[0]} are corrupt or truncated "
                              f"({describe(exc)}); re-copy or re-save the model") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise KDCompressError(f"{path}/{weight_files[0]} lacks {len(missing)} weights (e.g. {missing[0]}); "
                              "it is not a complete sequence classifier - re-save it")
    model.eval()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if param_bytes > MAX_WEIGHT_BYTES:
        raise KDCompressError(f"{path} has {param_bytes / 1e9:.1f} GB of weights; export-onnx writes "
                              "single-file ONNX models, which are limited to 2 GB")
    source.model = model
    source.input_names = graph_input_names(model, source.tokenizer)
    return source


def graph_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The inputs the tokenizer really produces and the model really uses, in Optimum's order.

    `token_type_ids` is kept only when the tokenizer emits it, the forward pass accepts it and
    the model has more than one segment embedding: BERT models with an XLM-R tokenizer
    (multilingual-e5, Multilingual-MiniLM) get input_ids and attention_mask only.
    """
    produced = set(tokenizer(*SAMPLE_TEXTS).keys())
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in GRAPH_INPUT_ORDER if n in produced and n in accepted]
    if "token_type_ids" in names and int(getattr(model.config, "type_vocab_size", 2) or 0) < 2:
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise KDCompressError("the tokenizer produces no input_ids; save a text tokenizer beside the model")
    return names
