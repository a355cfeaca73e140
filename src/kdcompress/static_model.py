"""The static student: token embeddings -> masked mean pooling -> (L2 normalisation) -> linear classifier.

No transformer layer: the far end of the compression frontier (issue 21), model2vec's idea as a trainable
sequence classifier. It is a proper Hugging Face model (its own `model_type`, saved with `save_pretrained`
in safetensors) so that every stage that loads a model folder (distill's evaluation, export-onnx, bench)
loads it through `AutoModelForSequenceClassification` without trust_remote_code: kdcompress registers the
classes with the Auto factories itself (`register_static_student`, called by the loading helpers).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

STATIC_MODEL_TYPE = "kdcompress-static"


class StaticStudentConfig(PretrainedConfig):
    model_type = STATIC_MODEL_TYPE

    def __init__(self, vocab_size: int = 30522, hidden_size: int = 256, normalize: bool = True,
                 classifier_dropout: float = 0.0, max_position_embeddings: int = 512, initializer_range: float = 0.02,
                 **kwargs):
        # A static model reads no segment ids: type_vocab_size 1 tells the exporter (deploy/model_dir.py) to leave
        # token_type_ids out of the graph, as it does for BERTs with an XLM-R tokenizer.
        kwargs.setdefault("type_vocab_size", 1)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.normalize = normalize
        self.classifier_dropout = classifier_dropout
        # No positions are read; kept (the teacher's) so that truncation matches the teacher's everywhere.
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.num_hidden_layers = 0


class StaticStudentForSequenceClassification(PreTrainedModel):
    config_class = StaticStudentConfig
    base_model_prefix = "static"
    main_input_name = "input_ids"

    def __init__(self, config: StaticStudentConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the token embeddings over the attention mask (padding never counts), L2-normalised if asked."""
        vectors = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.to(vectors.dtype).unsqueeze(-1)
        pooled = (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        if self.config.normalize:
            # Length sqrt(d), not 1: each feature then has unit scale, as the head's initialisation and learning rate
            # expect. At length 1 the head needed weights 10x larger than it reached in 700 KD steps (its
            # predictions stayed flat: 35% dev accuracy where a logistic regression on the same vectors got 54-65%).
            pooled = nn.functional.normalize(pooled, dim=-1) * pooled.shape[-1] ** 0.5
        return pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                return_dict: bool | None = None, output_hidden_states: bool | None = None,
                **kwargs) -> SequenceClassifierOutput:
        # token_type_ids and the rest are accepted (callers pass what BERTs take) and ignored: nothing here uses them.
        logits = self.classifier(self.dropout(self.pooled(input_ids, attention_mask)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=None, attentions=None)


def is_static_config(config) -> bool:
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type == STATIC_MODEL_TYPE


def register_static_student() -> None:
    """Make `AutoConfig` / `AutoModelForSequenceClassification` know the static student (idempotent)."""
    AutoConfig.register(STATIC_MODEL_TYPE, StaticStudentConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(StaticStudentConfig, StaticStudentForSequenceClassification,
                                                exist_ok=True)
