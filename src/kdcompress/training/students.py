"""Build a compact student from its teacher: fewer layers, optionally narrower, optionally a trimmed vocabulary.

Depth: the student takes N of the teacher's layers (every k-th, like DistilBERT, or the bottom N).
Width: a narrower student keeps a consistent subset of the teacher's residual dimensions, heads
and feed-forward neurons (the most important by weight norm), so it starts as a structured
sub-network of the teacher rather than from scratch.
Vocabulary: rows of the embedding (and masked-LM decoder) for kept token ids only.

Parameters are matched to roles by name; a parameter we do not recognise is an error, never
silently copied into a wrong shape.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel

from kdcompress.errors import KDCompressError

SUPPORTED_MODEL_TYPES = ("bert", "distilbert")

# Roles of each tensor dimension: S residual width, A attention width, I feed-forward width,
# V vocabulary, None untouched. First matching pattern wins.
_ROLES = {
    "bert": [
        (r"embeddings\.word_embeddings\.weight$", ("V", "S")),
        (r"embeddings\.(position|token_type)_embeddings\.weight$", (None, "S")),
        (r"LayerNorm\.(weight|bias)$", ("S",)),
        (r"attention\.self\.(query|key|value)\.weight$", ("A", "S")),
        (r"attention\.self\.(query|key|value)\.bias$", ("A",)),
        (r"attention\.output\.dense\.weight$", ("S", "A")),
        (r"attention\.output\.dense\.bias$", ("S",)),
        (r"intermediate\.dense\.weight$", ("I", "S")),
        (r"intermediate\.dense\.bias$", ("I",)),
        (r"layer\.\d+\.output\.dense\.weight$", ("S", "I")),
        (r"layer\.\d+\.output\.dense\.bias$", ("S",)),
        (r"(pooler|transform)\.dense\.weight$", ("S", "S")),
        (r"(pooler|transform)\.dense\.bias$", ("S",)),
        (r"predictions\.decoder\.weight$", ("V", "S")),
        (r"predictions\.(decoder\.)?bias$", ("V",)),
        (r"embeddings\.position_ids$", (None, None)),
    ],
    "distilbert": [
        (r"embeddings\.word_embeddings\.weight$", ("V", "S")),
        (r"embeddings\.position_embeddings\.weight$", (None, "S")),
        (r"(LayerNorm|layer_norm)\.(weight|bias)$", ("S",)),
        (r"attention\.(q_lin|k_lin|v_lin)\.weight$", ("A", "S")),
        (r"attention\.(q_lin|k_lin|v_lin)\.bias$", ("A",)),
        (r"attention\.out_lin\.weight$", ("S", "A")),
        (r"attention\.out_lin\.bias$", ("S",)),
        (r"ffn\.lin1\.weight$", ("I", "S")),
        (r"ffn\.lin1\.bias$", ("I",)),
        (r"ffn\.lin2\.weight$", ("S", "I")),
        (r"ffn\.lin2\.bias$", ("S",)),
        (r"vocab_transform\.weight$", ("S", "S")),
        (r"vocab_transform\.bias$", ("S",)),
        (r"vocab_projector\.weight$", ("V", "S")),
        (r"vocab_projector\.bias$", ("V",)),
        (r"embeddings\.position_ids$", (None, None)),
    ],
}
_LAYER_KEY = re.compile(r"^(.*?(?:encoder|transformer)\.layer\.)(\d+)(\..*)$")
_INTERMEDIATE_ATTR = {"bert": "intermediate_size", "distilbert": "hidden_dim"}
# Names (relative to a layer) of the query/key/value projections, hooked for attention-relation KD.
QKV_MODULES = {
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
}


def check_supported(config: PretrainedConfig) -> str:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise KDCompressError(
            f"unsupported teacher architecture {config.model_type!r}; kdcompress distills BERT-family encoders "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}, including XLM-R-vocabulary BERTs)"
        )
    return config.model_type


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer blocks of a BERT-family model (with or without a task head)."""
    base = model.base_model
    return base.encoder.layer if hasattr(base, "encoder") else base.transformer.layer


@dataclass(frozen=True)
class StudentPlan:
    """Which teacher parts a student keeps. Written to distill.json."""

    layer_map: tuple[int, ...]  # student layer j is a copy of teacher layer layer_map[j]
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def select_layers(teacher_layers: int, student_layers: int, selection: str) -> tuple[int, ...]:
    """Uniform: every k-th layer ending with the top one (keeps the teacher's depth profile).
    Bottom: the first N. Top: the last N."""
    if student_layers > teacher_layers:
        raise KDCompressError(
            f"a {student_layers}-layer student is deeper than its {teacher_layers}-layer teacher; "
            f"choose --student-layers <= {teacher_layers}"
        )
    if selection == "bottom":
        return tuple(range(student_layers))
    if selection == "top":
        return tuple(range(teacher_layers - student_layers, teacher_layers))
    return tuple((j + 1) * teacher_layers // student_layers - 1 for j in range(student_layers))


def plan_student(teacher_config: PretrainedConfig, *, layers: int, hidden: int | None = None,
                 selection: str = "uniform", vocab_size: int | None = None) -> StudentPlan:
    check_supported(teacher_config)
    t_hidden = teacher_config.hidden_size
    if layers == 0:  # a static student (training/static_student.py): embeddings and a head, no layer to select
        from kdcompress.training.static_student import static_width

        return StudentPlan(layer_map=(), hidden_size=static_width(hidden, t_hidden), num_heads=0, intermediate_size=0,
                           vocab_size=vocab_size or teacher_config.vocab_size)
    t_heads = teacher_config.num_attention_heads
    head_dim = t_hidden // t_heads
    hidden = hidden or t_hidden
    if hidden > t_hidden:
        raise KDCompressError(
            f"a student {hidden} wide is wider than its teacher ({t_hidden}); choose --student-hidden <= {t_hidden}"
        )
    if hidden % head_dim:
        raise KDCompressError(
            f"--student-hidden {hidden} is not a multiple of the teacher's head size {head_dim}; "
            f"choose e.g. {max(head_dim, hidden // head_dim * head_dim)}"
        )
    t_intermediate = getattr(teacher_config, _INTERMEDIATE_ATTR[teacher_config.model_type])
    return StudentPlan(
        layer_map=select_layers(teacher_config.num_hidden_layers, layers, selection),
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        intermediate_size=t_intermediate * hidden // t_hidden,
        vocab_size=vocab_size or teacher_config.vocab_size,
    )


def student_config(teacher_config: PretrainedConfig, plan: StudentPlan) -> PretrainedConfig:
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = len(plan.layer_map)
    config.hidden_size = plan.hidden_size
    config.num_attention_heads = plan.num_heads
    setattr(config, _INTERMEDIATE_ATTR[config.model_type], plan.intermediate_size)
    config.vocab_size = plan.vocab_size
    config.architectures = None
    return config


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


class _WidthSelection:
    """Which residual dims, heads and neurons a narrower student keeps (data-free importance by norms)."""

    def __init__(self, state: dict[str, torch.Tensor], model_type: str, teacher_config, plan: StudentPlan):
        self.full = plan.hidden_size == teacher_config.hidden_size
        self.layer_intermediate: dict[int, torch.Tensor] = {}
        if self.full:
            return
        roles = _ROLES[model_type]
        word = next(v for k, v in state.items() if re.search(roles[0][0], k))
        # Residual dims that carry most of the embedding signal flow through every layer.
        self.residual = _top_k(word.float().std(dim=0), plan.hidden_size)
        head_dim = teacher_config.hidden_size // teacher_config.num_attention_heads
        head_scores = torch.zeros(teacher_config.num_attention_heads)
        for key, value in state.items():
            if self._role(key, model_type) == ("S", "A"):  # attention output projections
                head_scores += value.float().norm(dim=0).view(-1, head_dim).sum(-1)
        heads = _top_k(head_scores, plan.num_heads)
        self.attention = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
        for key, value in state.items():
            match = _LAYER_KEY.match(key)
            if match and self._role(key, model_type) == ("I", "S"):
                self.layer_intermediate[int(match.group(2))] = _top_k(value.float().norm(dim=1), plan.intermediate_size)

    @staticmethod
    def _role(key: str, model_type: str):
        return next((roles for pattern, roles in _ROLES[model_type] if re.search(pattern, key)), None)

    def index(self, role: str | None, layer: int | None) -> torch.Tensor | None:
        if self.full or role in (None, "V"):
            return None
        if role == "S":
            return self.residual
        if role == "A":
            return self.attention
        return self.layer_intermediate[layer]


def student_state_dict(teacher_state: dict[str, torch.Tensor], teacher_config: PretrainedConfig,
                       plan: StudentPlan, keep_token_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Map a teacher state dict (base model and, optionally, MLM head keys) to the student's shape."""
    model_type = check_supported(teacher_config)
    width = _WidthSelection(teacher_state, model_type, teacher_config, plan)
    vocab_index = torch.tensor(keep_token_ids) if keep_token_ids is not None else None
    teacher_to_student = {t: j for j, t in enumerate(plan.layer_map)}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in teacher_state.items():
        layer = None
        new_key = key
        match = _LAYER_KEY.match(key)
        if match:
            layer = int(match.group(2))
            if layer not in teacher_to_student:
                continue
            new_key = f"{match.group(1)}{teacher_to_student[layer]}{match.group(3)}"
        roles = _WidthSelection._role(key, model_type)
        if roles is None:
            raise KDCompressError(f"cannot map teacher parameter {key!r} onto a student; is this a standard {model_type} checkpoint?")
        for dim, role in enumerate(roles):
            index = vocab_index if role == "V" else width.index(role, layer)
            if index is not None:
                tensor = tensor.index_select(dim, index)
        out[new_key] = tensor.clone()
    return out


def build_student(teacher: PreTrainedModel, plan: StudentPlan, student_class: type[PreTrainedModel], *,
                  keep_token_ids: list[int] | None = None, config_overrides: dict | None = None) -> PreTrainedModel:
    """A `student_class` model (e.g. BertForMaskedLM, BertForSequenceClassification) initialised from `teacher`.

    Copies the base model, and the masked-LM head too when both teacher and student have one.
    Task heads start fresh.
    """
    if keep_token_ids is not None and plan.vocab_size != len(keep_token_ids):
        raise KDCompressError("internal: the student plan's vocabulary size differs from the kept token ids")
    config = student_config(teacher.config, plan)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    if keep_token_ids is not None and teacher.config.pad_token_id is not None:
        config.pad_token_id = keep_token_ids.index(teacher.config.pad_token_id)
    student = student_class(config)
    prefix = teacher.base_model_prefix
    teacher_state = {}
    for key, value in teacher.state_dict().items():
        # Base-model keys lose their prefix so that a bare BertModel teacher and a BertFor* teacher look alike.
        if key.startswith(prefix + "."):
            teacher_state[key[len(prefix) + 1:]] = value
        elif teacher is teacher.base_model:
            teacher_state[key] = value
        elif _is_mlm_head_key(key):
            teacher_state["__head__." + key] = value
    mapped = student_state_dict(teacher_state, teacher.config, plan, keep_token_ids)
    base_state = {k: v for k, v in mapped.items() if not k.startswith("__head__.")}
    missing, unexpected = student.base_model.load_state_dict(base_state, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.") and not k.endswith("position_ids")]
    if unexpected or missing:
        raise KDCompressError(f"student construction failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    head_state = {k[len("__head__."):]: v for k, v in mapped.items() if k.startswith("__head__.")}
    student_keys = set(student.state_dict())
    head_state = {k: v for k, v in head_state.items() if k in student_keys}
    if head_state:
        student.load_state_dict(head_state, strict=False)
    if hasattr(student, "tie_weights"):
        student.tie_weights()
    return student


def _is_mlm_head_key(key: str) -> bool:
    return key.startswith("cls.predictions.") or key.startswith(("vocab_transform.", "vocab_layer_norm.", "vocab_projector."))
