"""KD during pretraining (task-agnostic): the student imitates the general teacher on unlabeled text.

loss = mlm_weight       * T^2 * KL over masked positions of the teacher's and student's MLM logits
     + hidden_weight    * hidden-state loss (cosine or MSE) against the layers the student was copied from
     + attention_weight * MiniLMv2 self-attention relation loss (Q-Q, K-K, V-V) of the last layer
The MLM term needs a teacher with a masked-LM head; the others work with any encoder.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from kdcompress.training import losses
from kdcompress.training.batching import TextBatcher, model_inputs
from kdcompress.training.loop import LoopResult, LoopSettings, run_training
from kdcompress.training.projection import HiddenProjection, paired_hidden_states
from kdcompress.training.students import QKV_MODULES, encoder_layers


@contextlib.contextmanager
def capture_qkv(model: PreTrainedModel, layer_index: int):
    """Record the query, key and value projections of one layer during the next forward pass."""
    captured: list[torch.Tensor | None] = [None, None, None]
    layer = encoder_layers(model)[layer_index]
    handles = []
    for slot, name in enumerate(QKV_MODULES[model.config.model_type]):
        def hook(_module, _inputs, output, slot=slot):
            captured[slot] = output
        handles.append(layer.get_submodule(name).register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor, *,
                mask_id: int, random_ids: torch.Tensor, probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (80% [MASK], 10% random token, 10% unchanged) drawn from the global RNG.

    Hand-written rather than DataCollatorForLanguageModeling because it must run inside the
    loop's per-step seeding (deterministic across resumes) and draw random tokens from the
    kept vocabulary only.
    """
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))
    selected = candidates & (torch.rand(input_ids.shape, device=input_ids.device) < probability)
    roll = torch.rand(input_ids.shape, device=input_ids.device)
    masked = input_ids.clone()
    masked[selected & (roll < 0.8)] = mask_id
    swap = selected & (roll >= 0.8) & (roll < 0.9)
    random_ids = random_ids.to(input_ids.device)
    masked[swap] = random_ids[torch.randint(len(random_ids), (int(swap.sum()),), device=input_ids.device)]
    return masked, selected


def relation_heads(teacher_width: int, student_width: int, teacher_heads: int) -> int:
    """The most relation heads (at most the teacher's head count) that divide both widths."""
    common = math.gcd(teacher_width, student_width)
    return max(h for h in range(1, teacher_heads + 1) if common % h == 0)


@dataclass(frozen=True)
class PretrainKDLoss:
    """The weighted sum of pretraining KD losses; a weight of 0 turns a term off."""

    mlm_weight: float = 0.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    hidden_loss: str = "cosine"
    temperature: float = 1.0  # of the soft masked-LM term
    mlm_probability: float = 0.15


@dataclass(frozen=True)
class StudentVocab:
    """How the student's vocabulary relates to the teacher's tokenizer (for masking and trimmed vocabularies)."""

    special_ids: list[int]
    mask_id: int | None
    keep_token_ids: list[int] | None = None  # teacher ids the student keeps (None: all)
    id_map: torch.Tensor | None = None  # teacher id -> student id, with a trimmed vocabulary


def pretrain_kd(*, student: PreTrainedModel, teacher: PreTrainedModel, batcher: TextBatcher, settings: LoopSettings,
                loss: PretrainKDLoss, vocab: StudentVocab, layer_map: tuple[int, ...]) -> LoopResult:
    mlm_weight, hidden_weight, attention_weight = loss.mlm_weight, loss.hidden_weight, loss.attention_weight
    hidden_loss, temperature, mlm_probability = loss.hidden_loss, loss.temperature, loss.mlm_probability
    special_ids, mask_id, keep_token_ids, id_map = vocab.special_ids, vocab.mask_id, vocab.keep_token_ids, vocab.id_map
    use_mlm = mlm_weight > 0
    projection = HiddenProjection(student.config.hidden_size, teacher.config.hidden_size)
    extra = {"projection": projection} if hidden_weight > 0 and not projection.is_identity else {}
    vocab_index = torch.tensor(keep_token_ids) if keep_token_ids is not None else None
    random_ids = vocab_index if vocab_index is not None else torch.arange(teacher.config.vocab_size)
    random_ids = random_ids[~torch.isin(random_ids, torch.tensor(special_ids))]
    special = torch.tensor(special_ids)
    n_relation = relation_heads(teacher.config.hidden_size, student.config.hidden_size,
                                teacher.config.num_attention_heads)
    top_teacher, top_student = layer_map[-1], len(layer_map) - 1

    def compute_loss(batch, modules):
        ids, mlm_mask = batch["input_ids"], None
        if use_mlm:
            ids, mlm_mask = mask_tokens(ids, batch["attention_mask"], special, mask_id=mask_id,
                                        random_ids=random_ids, probability=mlm_probability)
        with torch.no_grad(), capture_qkv(teacher, top_teacher) as teacher_qkv:
            teacher_out = teacher(**model_inputs(batch, student=False, input_ids=ids), output_hidden_states=True)
        student_model = modules["model"]
        with capture_qkv(_unwrap(student_model), top_student) as student_qkv:
            student_out = student_model(**model_inputs(batch, student=True, id_map=id_map, input_ids=ids),
                                        output_hidden_states=True)
        loss = torch.zeros((), device=ids.device)
        parts = {}
        if use_mlm and mlm_weight > 0:
            teacher_logits = teacher_out.logits
            if vocab_index is not None:
                teacher_logits = teacher_logits.index_select(-1, vocab_index.to(ids.device))
            mlm = losses.masked_lm_kd_loss(student_out.logits, teacher_logits, mlm_mask, temperature=temperature)
            loss, parts["mlm"] = loss + mlm_weight * mlm, float(mlm.detach())
        if hidden_weight > 0:
            s, t = paired_hidden_states(student_out.hidden_states, teacher_out.hidden_states, layer_map,
                                        modules.get("projection", projection))
            hidden = losses.hidden_state_loss(s, t, batch["attention_mask"], kind=hidden_loss)
            loss, parts["hidden"] = loss + hidden_weight * hidden, float(hidden.detach())
        if attention_weight > 0:
            attn = losses.attention_relation_loss(tuple(student_qkv), tuple(teacher_qkv), batch["attention_mask"],
                                                  num_relation_heads=n_relation)
            loss, parts["attention"] = loss + attention_weight * attn, float(attn.detach())
        return loss, parts

    return run_training(settings=settings, model=student, dataset_size=len(batcher), make_batch=batcher,
                        compute_loss=compute_loss, extra_modules=extra, frozen_modules=[teacher],
                        lengths=[len(text) for text in batcher.texts])


def _unwrap(model: torch.nn.Module) -> PreTrainedModel:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
