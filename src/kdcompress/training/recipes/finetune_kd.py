"""KD during fine-tuning: the student learns the source-language task from a fine-tuned teacher.

loss = alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE
       [+ hidden_weight * hidden-state loss against the layers the student was copied from]

With a multilingual transfer set (`kd_transfer`), unlabeled rows in other languages carry only the
teacher's soft labels: KL covers the rows the batch's `kd_mask` marks, CE the labelled (source) rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from kdcompress.progress import Progress
from transformers import PreTrainedModel

from kdcompress.training import losses
from kdcompress.training.batching import TextBatcher, model_inputs
from kdcompress.training.loop import LoopResult, LoopSettings, run_training
from kdcompress.training.projection import HiddenProjection, paired_hidden_states


@torch.inference_mode()
def cache_teacher_logits(teacher: PreTrainedModel, batcher: TextBatcher, batch_size: int) -> torch.Tensor:
    """Teacher logits for every training example, computed once: the teacher is frozen and the
    inputs do not change between epochs, so recomputing them each epoch would be wasted work."""
    # On the GPU where there is one: the teacher is still where it was loaded (the CPU) until the training loop
    # moves it, and a pass over the whole transfer set on one CPU thread took minutes where the GPU takes seconds.
    device = torch.device("cuda") if torch.cuda.is_available() else next(teacher.parameters()).device
    teacher.to(device).eval()
    out = []
    with Progress(transient=True) as bar:
        task = bar.add_task("teacher logits", total=len(batcher))
        for start in range(0, len(batcher), batch_size):
            batch = batcher(list(range(start, min(start + batch_size, len(batcher)))))
            batch = {k: v.to(device) for k, v in batch.items()}
            out.append(teacher(**model_inputs(batch, student=False)).logits.float().cpu())
            bar.advance(task, len(batch["index"]))
    return torch.cat(out)


@dataclass(frozen=True)
class FinetuneKDLoss:
    """The loss of KD in fine-tuning (see the module docstring)."""

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    hidden_loss: str = "cosine"
    layer_map: tuple[int, ...] = ()  # teacher layer each student layer was copied from (hidden-state loss)


def finetune_kd(*, student: PreTrainedModel, teacher: PreTrainedModel, batcher: TextBatcher, settings: LoopSettings,
                loss: FinetuneKDLoss, id_map=None,
                teacher_logits: Callable[[Callable[[], torch.Tensor]], torch.Tensor] | None = None) -> LoopResult:
    """`teacher_logits(compute)` may answer `compute()` from a cache (training/logits_cache.py)."""
    temperature, alpha, hidden_weight = loss.temperature, loss.alpha, loss.hidden_weight
    hidden_loss, layer_map = loss.hidden_loss, loss.layer_map
    use_hidden = hidden_weight > 0
    projection = HiddenProjection(student.config.hidden_size, teacher.config.hidden_size)
    extra = {"projection": projection} if use_hidden and not projection.is_identity else {}
    compute = lambda: cache_teacher_logits(teacher, batcher, settings.batch_size)  # noqa: E731
    if use_hidden:
        cached = None  # hidden states are needed anyway: the teacher runs on every batch
    elif teacher_logits is not None:
        cached = teacher_logits(compute)
    else:
        cached = None if settings.epochs <= 1 else compute()

    def compute_loss(batch, modules):
        student_out = modules["model"](**model_inputs(batch, student=True, id_map=id_map), output_hidden_states=use_hidden)
        if cached is not None:
            teacher_logits, teacher_hidden = cached.to(student_out.logits.device)[batch["index"]], None
        else:
            with torch.no_grad():
                teacher_out = teacher(**model_inputs(batch, student=False), output_hidden_states=use_hidden)
            teacher_logits, teacher_hidden = teacher_out.logits, teacher_out.hidden_states
        kd = losses.logit_kd_loss(student_out.logits, teacher_logits, batch["labels"], temperature=temperature,
                                  alpha=alpha, kd_mask=batch.get("kd_mask"))
        parts = {"kd_ce": float(kd.detach())}
        loss = kd
        if use_hidden:
            s, t = paired_hidden_states(student_out.hidden_states, teacher_hidden, layer_map,
                                        modules.get("projection", projection))
            hidden = losses.hidden_state_loss(s, t, batch["attention_mask"], kind=hidden_loss)
            loss = loss + hidden_weight * hidden
            parts["hidden"] = float(hidden.detach())
        return loss, parts

    return run_training(settings=settings, model=student, dataset_size=len(batcher), make_batch=batcher,
                        compute_loss=compute_loss, extra_modules=extra, frozen_modules=[teacher])
