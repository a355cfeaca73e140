"""The stages a strategy is made of (see `strategies.py`): each builds its models, runs one recipe and
returns `(model, tokenizer, LoopResult, LoopSettings)` for the run directory to save.

A stage reads what earlier stages produced from `StageOutputs`: `general` (the pretraining-KD student)
and `teacher` (the fine-tuned teacher).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from kdcompress.errors import KDCompressError
from kdcompress.training import logits_cache, teacher_loading
from kdcompress.training.batching import TextBatcher
from kdcompress.training.loop import LoopSettings
from kdcompress.training.recipes.finetune import finetune
from kdcompress.training.recipes.finetune_kd import FinetuneKDLoss, finetune_kd
from kdcompress.training.recipes.pretrain_kd import PretrainKDLoss, StudentVocab, pretrain_kd
from kdcompress.training.setup import RunSetup
from kdcompress.training.static_student import build_static_student
from kdcompress.training.students import build_student


@dataclass
class StageOutputs:
    general: Path | None = None  # the general (task-agnostic) student from pretraining KD
    teacher: Path | str | None = None  # the fine-tuned teacher: made by the `teacher` stage, or given
    teacher_made_here: bool = False
    pretrain_losses: dict | None = None


def loop_settings(setup: RunSetup, stage: str, checkpoint_dir: Path, *, lr: float, epochs: float,
                  batch_size: int | None = None) -> LoopSettings:
    c = setup.cfg
    return LoopSettings(stage=stage, lr=lr, epochs=epochs, batch_size=batch_size or c.batch_size, seed=c.seed,
                        warmup_ratio=c.warmup_ratio, weight_decay=c.weight_decay, max_steps=c.max_steps,
                        grad_accum=c.grad_accum, save_every=c.save_every, mixed_precision=c.mixed_precision,
                        checkpoint_dir=checkpoint_dir, resume=c.resume)


def _freeze_embeddings_if_asked(setup: RunSetup, model: PreTrainedModel) -> PreTrainedModel:
    """Training updates few rows of a 250k-token embedding, while weight decay and Adam still touch (and cost
    time on) every row, and drift the unseen-language rows away from the teacher's; freezing avoids both."""
    if setup.cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def _train_batcher(setup: RunSetup) -> TextBatcher:
    examples = setup.train_examples
    return TextBatcher(setup.tokenizer, [e.text for e in examples], [e.text_pair for e in examples],
                       [e.label for e in examples], max_length=setup.max_length)


def _label_overrides(setup: RunSetup) -> dict:
    labels = setup.task.labels
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def _new_student(setup: RunSetup, student_class: type[PreTrainedModel], teacher: PreTrainedModel | None = None,
                 **overrides) -> PreTrainedModel:
    teacher = teacher or teacher_loading.load_general_teacher(setup.cfg.teacher)[0]
    torch.manual_seed(setup.cfg.seed)  # fresh heads start the same in every run with this seed
    return build_student(teacher, setup.plan, student_class, keep_token_ids=setup.keep_ids, config_overrides=overrides)


def _new_static_student(setup: RunSetup) -> PreTrainedModel:
    """--student-layers 0: token vectors distilled from the general teacher (--teacher, as model2vec does, whatever
    --init-from says), the head fresh."""
    teacher = teacher_loading.load_general_teacher(setup.cfg.teacher)[0]
    if torch.cuda.is_available():
        teacher = teacher.cuda()
    torch.manual_seed(setup.cfg.seed)
    return build_static_student(teacher, setup.tokenizer, hidden=setup.plan.hidden_size, keep_token_ids=setup.keep_ids,
                                config_overrides=_label_overrides(setup))


def _student_classifier(setup: RunSetup, outputs: StageOutputs) -> PreTrainedModel:
    """The student to fine-tune: from the general student where pretraining KD ran, else built from the (general
    or fine-tuned, see --init-from) teacher's layers."""
    init_dir = outputs.general
    if setup.cfg.is_static:
        student = _new_static_student(setup)
    elif init_dir is None:
        classifier = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(setup.teacher_config)]
        source = None
        if setup.cfg.init_from == "finetuned-teacher":
            source = AutoModelForSequenceClassification.from_pretrained(outputs.teacher)
        student = _new_student(setup, classifier, source, **_label_overrides(setup))
    else:
        torch.manual_seed(setup.cfg.seed)
        student = AutoModelForSequenceClassification.from_pretrained(init_dir, **_label_overrides(setup))
    return _freeze_embeddings_if_asked(setup, student)


def pretrain_kd_stage(setup: RunSetup, outputs: StageOutputs, checkpoint_dir: Path):
    cfg = setup.cfg
    teacher, has_mlm = teacher_loading.load_general_teacher(cfg.teacher, trust_remote_code=cfg.trust_remote_code)
    if cfg.mlm_weight and not has_mlm:
        raise KDCompressError(f"teacher {cfg.teacher} has no masked-LM head, so --mlm-weight cannot be used; set it "
                              "to 0 (hidden-state and attention losses still apply)")
    mlm_weight = (1.0 if has_mlm else 0.0) if cfg.mlm_weight is None else cfg.mlm_weight
    if mlm_weight == 0 and cfg.hidden_weight == 0 and cfg.attention_weight == 0:
        raise KDCompressError("every pretraining KD loss has weight 0; give --hidden-weight or --attention-weight > 0")
    student = _freeze_embeddings_if_asked(setup, _new_student(setup, type(teacher), teacher))
    settings = loop_settings(setup, "pretrain KD", checkpoint_dir, lr=cfg.pretrain_lr, epochs=cfg.pretrain_epochs,
                             batch_size=cfg.pretrain_batch_size)
    loss = PretrainKDLoss(mlm_weight=mlm_weight, hidden_weight=cfg.hidden_weight,
                          attention_weight=cfg.attention_weight, hidden_loss=cfg.hidden_loss,
                          temperature=cfg.pretrain_temperature, mlm_probability=cfg.mlm_probability)
    vocab = StudentVocab(special_ids=setup.tokenizer.all_special_ids, mask_id=setup.tokenizer.mask_token_id,
                         keep_token_ids=setup.keep_ids, id_map=setup.id_map)
    result = pretrain_kd(student=student, teacher=teacher, settings=settings, loss=loss, vocab=vocab,
                         batcher=TextBatcher(setup.tokenizer, setup.corpus, max_length=setup.max_length),
                         layer_map=setup.plan.layer_map)
    outputs.pretrain_losses = {"mlm": mlm_weight, "hidden": cfg.hidden_weight, "attention": cfg.attention_weight,
                               "teacher_has_mlm_head": has_mlm}
    return student, setup.student_tokenizer, result, settings


def teacher_stage(setup: RunSetup, outputs: StageOutputs, checkpoint_dir: Path):
    cfg = setup.cfg
    torch.manual_seed(cfg.seed)  # a fresh classifier head (and pooler) starts the same in every run with this seed
    model = _freeze_embeddings_if_asked(
        setup, teacher_loading.load_classifier(cfg.teacher, setup.task, trust_remote_code=cfg.trust_remote_code))
    settings = loop_settings(setup, "teacher fine-tuning", checkpoint_dir, lr=cfg.teacher_lr,
                             epochs=cfg.teacher_epochs)
    result = finetune(model=model, batcher=_train_batcher(setup), settings=settings)
    return model, setup.tokenizer, result, settings


def finetune_stage(setup: RunSetup, outputs: StageOutputs, checkpoint_dir: Path):
    cfg = setup.cfg
    student = _student_classifier(setup, outputs)
    settings = loop_settings(setup, "student fine-tuning", checkpoint_dir, lr=cfg.student_lr, epochs=cfg.epochs)
    result = finetune(model=student, batcher=_train_batcher(setup), settings=settings, id_map=setup.id_map)
    return student, setup.student_tokenizer, result, settings


def finetune_kd_stage(setup: RunSetup, outputs: StageOutputs, checkpoint_dir: Path):
    cfg = setup.cfg
    student = _student_classifier(setup, outputs)
    teacher = AutoModelForSequenceClassification.from_pretrained(outputs.teacher).eval()
    settings = loop_settings(setup, "student KD fine-tuning", checkpoint_dir, lr=cfg.student_lr, epochs=cfg.epochs)
    loss = FinetuneKDLoss(temperature=cfg.temperature, alpha=cfg.alpha, hidden_weight=cfg.finetune_hidden_weight,
                          hidden_loss=cfg.hidden_loss, layer_map=setup.plan.layer_map)
    transfer = setup.transfer
    batcher = TextBatcher(setup.tokenizer, [e.text for e in transfer.examples], [e.text_pair for e in transfer.examples],
                          [e.label for e in transfer.examples], max_length=setup.max_length,
                          kd_mask=None if all(transfer.kd_mask) else transfer.kd_mask)
    cache = (None if cfg.teacher_logits_cache is None else
             partial(logits_cache.teacher_logits, cfg.teacher_logits_cache, outputs.teacher, batcher))
    result = finetune_kd(student=student, teacher=teacher, batcher=batcher, settings=settings, loss=loss,
                         id_map=setup.id_map, teacher_logits=cache)
    return student, setup.student_tokenizer, result, settings


Stage = Callable[[RunSetup, StageOutputs, Path], tuple]

#: Stage name -> (function, the run-directory folder it writes, the StageOutputs field it fills).
STAGES: dict[str, tuple[Stage, str, str | None]] = {
    "pretrain_kd": (pretrain_kd_stage, "pretrain_kd", "general"),
    "teacher": (teacher_stage, "teacher", "teacher"),
    "finetune": (finetune_stage, "student", None),
    "finetune_kd": (finetune_kd_stage, "student", None),
}
