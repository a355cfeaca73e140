"""Plain fine-tuning with cross-entropy: the teacher on the source language, the `none` baseline,
and the second stage of `pretrain`."""

from __future__ import annotations

import torch.nn.functional as F
from transformers import PreTrainedModel

from kdcompress.training.batching import TextBatcher, model_inputs
from kdcompress.training.loop import LoopResult, LoopSettings, run_training


def finetune(*, model: PreTrainedModel, batcher: TextBatcher, settings: LoopSettings, id_map=None) -> LoopResult:
    def compute_loss(batch, modules):
        logits = modules["model"](**model_inputs(batch, student=True, id_map=id_map)).logits
        loss = F.cross_entropy(logits, batch["labels"])
        return loss, {"ce": float(loss.detach())}

    return run_training(settings=settings, model=model, dataset_size=len(batcher), make_batch=batcher,
                        compute_loss=compute_loss)
