"""Every knowledge-distillation loss, as a pure function on tensors.

No module state, no model calls: recipes gather logits / hidden states / attention
projections and pass them here, which keeps each loss testable against a hand computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), averaged over rows (Hinton et al., 2015).

    The T^2 factor keeps the gradient scale independent of the temperature.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * t * t


#: The label of a transfer-set row: unlabeled text that carries the teacher's soft labels only.
UNLABELED = -100


def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  *, temperature: float, alpha: float, kd_mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * CE(student, labels).

    With a transfer set, the KL term averages over the rows in `kd_mask` (default: every row) and the
    cross-entropy over the labelled rows (label != UNLABELED); a term with no rows in the batch is 0.
    """
    kd_rows = torch.ones_like(labels, dtype=torch.bool) if kd_mask is None else kd_mask.bool()
    labelled = labels != UNLABELED
    zero = student_logits.sum() * 0.0
    kd = soft_kl(student_logits[kd_rows], teacher_logits[kd_rows], temperature) if kd_rows.any() else zero
    ce = F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else zero
    return alpha * kd + (1.0 - alpha) * ce


def masked_lm_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mlm_mask: torch.Tensor,
                      *, temperature: float) -> torch.Tensor:
    """Soft masked-LM distillation over the masked positions only ([batch, seq, vocab] logits)."""
    selected = mlm_mask.bool()
    if not selected.any():
        return student_logits.sum() * 0.0
    return soft_kl(student_logits[selected], teacher_logits[selected], temperature)


def hidden_state_loss(student_states: list[torch.Tensor], teacher_states: list[torch.Tensor],
                      attention_mask: torch.Tensor, *, kind: str = "cosine") -> torch.Tensor:
    """Mean over layer pairs of a per-token distance between (already width-matched) hidden states.

    `kind="cosine"` is 1 - cosine similarity (DistilBERT); `kind="mse"` is mean squared error (TinyBERT).
    Padding positions are ignored.
    """
    if len(student_states) != len(teacher_states):
        raise ValueError("hidden_state_loss needs as many student as teacher layers")
    mask = attention_mask.bool()
    losses = []
    for s, t in zip(student_states, teacher_states):
        s, t = s[mask], t[mask]
        if kind == "cosine":
            losses.append((1.0 - F.cosine_similarity(s, t, dim=-1)).mean())
        elif kind == "mse":
            losses.append(F.mse_loss(s, t))
        else:
            raise ValueError(f"unknown hidden-state loss {kind!r}; use 'cosine' or 'mse'")
    return torch.stack(losses).mean()


def self_attention_relations(states: torch.Tensor, num_relation_heads: int) -> torch.Tensor:
    """Scaled dot-product relations of one projection (MiniLMv2): [batch, heads, seq, seq] logits.

    Splitting into a fixed number of relation heads lets a narrow student be compared with a
    wide teacher without any learned projection: the relation matrices are seq x seq either way.
    """
    batch, seq, width = states.shape
    if width % num_relation_heads:
        raise ValueError(f"width {width} is not divisible by {num_relation_heads} relation heads")
    head = width // num_relation_heads
    split = states.view(batch, seq, num_relation_heads, head).transpose(1, 2)
    return split @ split.transpose(-1, -2) / math.sqrt(head)


def attention_relation_loss(student_qkv: tuple[torch.Tensor, ...], teacher_qkv: tuple[torch.Tensor, ...],
                            attention_mask: torch.Tensor, *, num_relation_heads: int) -> torch.Tensor:
    """MiniLMv2 self-attention relation distillation: KL between teacher and student Q-Q, K-K, V-V relations.

    Each argument holds the query, key and value projections ([batch, seq, width]) of one layer.
    Padded keys are masked out of the softmax; padded query rows are left out of the mean.
    """
    key_mask = attention_mask[:, None, None, :].bool()
    row_mask = attention_mask[:, None, :].bool().expand(-1, num_relation_heads, -1)
    losses = []
    for s, t in zip(student_qkv, teacher_qkv):
        s_rel = self_attention_relations(s, num_relation_heads).masked_fill(~key_mask, -1e4)
        t_rel = self_attention_relations(t, num_relation_heads).masked_fill(~key_mask, -1e4)
        log_s = F.log_softmax(s_rel, dim=-1)
        log_t = F.log_softmax(t_rel, dim=-1)
        kl_rows = (log_t.exp() * (log_t - log_s)).sum(-1)  # [batch, heads, seq]
        losses.append(kl_rows[row_mask].mean())
    return torch.stack(losses).mean()
