"""An export-time graph for sequence classifiers whose last layer computes the [CLS] position alone.

A BERT-family sequence classifier reads one position of the last layer's output: position 0, through
BERT's pooler or DistilBERT's pre-classifier. The other positions of that layer (their queries,
attention outputs, feed-forward blocks and layer norms) are computed and thrown away. Here the last
layer runs its query, attention output and feed-forward on position 0 only, with keys and values
still from every position, so the logits are those of the whole model (1e-7 apart; the export checks
them like any graph). On a 6-layer student at 128 tokens that is 5-15% less latency on ONNX Runtime
and OpenVINO (benchmarks/README.md, "The last layer on [CLS] only").

Why hand-written: no library prunes a layer to one query position (ONNX Runtime and OpenVINO see
position-wise work they cannot prove unused before the pooler's Gather). The layers before the last
run through transformers' own forward (masks and attention implementation included); the last layer's
attention is the plain softmax attention every supported model computes, on its own weight modules.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

from kdcompress.deploy.traced import logits_module

# model class -> (base model attribute, path to its layer list)
_SUPPORTED = {
    "BertForSequenceClassification": ("bert", ("encoder", "layer")),
    "DistilBertForSequenceClassification": ("distilbert", ("transformer", "layer")),
}


def unsupported_reason(model: Any, input_names: Sequence[str]) -> str | None:
    """Why `model` keeps its whole last layer, or None when the [CLS]-only graph applies."""
    name = type(model).__name__
    if name not in _SUPPORTED:
        return f"{name} is not a BERT or DistilBERT sequence classifier"
    config = model.config
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"relative position embeddings ({config.position_embedding_type}) need every query position"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder or cross-attention model"
    if "attention_mask" not in input_names:
        return "the graph has no attention_mask input"
    base, _ = _SUPPORTED[name]
    if name == "BertForSequenceClassification" and getattr(model.bert, "pooler", None) is None:
        return "the BERT model has no pooler"
    if len(_layers(getattr(model, base), _SUPPORTED[name][1])) < 1:
        return "the model has no layers"
    return None


def _layers(base: Any, path: tuple[str, str]) -> Any:
    return getattr(getattr(base, path[0]), path[1])


def _trunk(base: Any, path: tuple[str, str]) -> Any:
    """`base` without its last layer (and pooler): a view sharing every weight, for transformers' forward."""
    import torch

    container = copy.copy(getattr(base, path[0]))
    container._modules = dict(container._modules)  # copy.copy shares the child registry; this one is its own
    setattr(container, path[1], torch.nn.ModuleList(list(getattr(container, path[1]))[:-1]))
    trunk = copy.copy(base)
    trunk._modules = dict(base._modules)
    setattr(trunk, path[0], container)
    if "pooler" in trunk._modules:
        trunk.pooler = None
    return trunk


def _attend_from_first(query: Any, key: Any, value: Any, heads: int, hidden: Any, mask: Any) -> Any:
    """Softmax attention of position 0 over every unmasked position: (batch, 1, width)."""
    import torch

    batch = hidden.shape[0]
    head_size = query.out_features // heads  # from the weights, not the traced shapes: a constant in the graph

    def split(x):
        return x.view(batch, -1, heads, head_size).transpose(1, 2)

    q, k, v = split(query(hidden[:, :1])), split(key(hidden)), split(value(hidden))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_size)
    blocked = (1.0 - mask[:, None, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
    context = torch.matmul(torch.softmax(scores + blocked, dim=-1), v)
    return context.transpose(1, 2).reshape(batch, 1, -1)


def _cls_only_classifier(model: Any, input_names: Sequence[str]):
    """`model` as a torch module whose last layer runs on position 0 only, sharing every weight. It is called like
    the model (the graph inputs by name, `return_dict=True`) and answers with `.logits`. Raises ValueError when
    `unsupported_reason` names a reason.

    ONNX node names follow the module calls: under traced.logits_module the layers before the last keep the
    whole graph's names (/model/bert/encoder/layer.0/...), the last layer's are /model/last_layer/..., the
    head's /model/classifier/...
    """
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    reason = unsupported_reason(model, input_names)
    if reason:
        raise ValueError(reason)
    base_name, path = _SUPPORTED[type(model).__name__]
    base = getattr(model, base_name)
    is_bert = base_name == "bert"

    class FirstPositionLayer(torch.nn.Module):
        """The last layer, run for position 0 alone; its children are the original layer's."""

        def __init__(self, layer: Any):
            super().__init__()
            self._modules.update(layer._modules)  # the same weight modules, called by name below

        def forward(self, hidden, mask):
            first = hidden[:, :1]
            if is_bert:
                attn = self.attention.self
                context = _attend_from_first(attn.query, attn.key, attn.value, attn.num_attention_heads, hidden, mask)
                attended = self.attention.output(context, first)
                return self.output(self.intermediate(attended), attended)
            attn = self.attention
            context = _attend_from_first(attn.q_lin, attn.k_lin, attn.v_lin, attn.n_heads, hidden, mask)
            attended = self.sa_layer_norm(attn.out_lin(context) + first)
            return self.output_layer_norm(self.ffn(attended) + attended)

    class ClsOnlyClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(base_name, _trunk(base, path))
            self.last_layer = FirstPositionLayer(_layers(base, path)[-1])
            for name in ("pooler",) if is_bert else ():
                self.add_module(name, getattr(base, name))
            for name in ("pre_classifier", "dropout", "classifier"):
                if name in model._modules:
                    self.add_module(name, getattr(model, name))

        def forward(self, return_dict: bool = True, **inputs):
            hidden = getattr(self, base_name)(**inputs, return_dict=True).last_hidden_state
            out = self.last_layer(hidden, inputs["attention_mask"])
            if is_bert:
                logits = self.classifier(self.dropout(self.pooler(out)))
            else:
                logits = self.classifier(self.dropout(torch.relu(self.pre_classifier(out[:, 0]))))
            return SequenceClassifierOutput(logits=logits)

    return ClsOnlyClassifier()


def cls_only_module(model: Any, input_names: Sequence[str]):
    """A torch module taking the graph inputs positionally and returning the logits, its last layer on
    position 0 only (what the export traces). Raises ValueError when `unsupported_reason` names a reason."""
    return logits_module(_cls_only_classifier(model, input_names), input_names)
