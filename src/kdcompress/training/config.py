"""Every setting of a `distill` run, as one dataclass (written whole to distill.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kdcompress.errors import KDCompressError

STRATEGIES = ("none", "finetune", "pretrain", "both")
LAYER_SELECTIONS = ("uniform", "bottom")
DEFAULT_TEACHER = "bert-base-multilingual-cased"


@dataclass
class DistillConfig:
    # What to distill
    teacher: str = DEFAULT_TEACHER
    task: str = "sib200"
    data_dir: str | None = None
    source_lang: str = "en"
    target_langs: list[str] = field(default_factory=list)
    strategy: str = "finetune"
    out: str = "runs/student"

    # Student shape
    student_layers: int = 6
    student_hidden: int | None = None
    layer_selection: str = "uniform"
    trim_vocab: bool = False

    # Shared training options
    max_length: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    epochs: float = 3.0
    max_steps: int | None = None  # caps every training stage (quick runs, smoke tests)
    seed: int = 42
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    save_every: int = 50
    freeze_embeddings: bool = False  # never train the word embeddings (faster; unseen-language tokens stay as pretrained)
    evaluate: bool = True  # closing dev-split accuracy of the student in every language, into distill.json
    eval_limit: int | None = None  # dev examples per language for the closing evaluation (None: all)

    # Teacher fine-tuning (when the teacher is not yet fine-tuned on the task)
    finetuned_teacher: str | None = None  # a classifier already fine-tuned on the task, used for KD in fine-tuning
    teacher_epochs: float = 3.0
    teacher_lr: float = 5e-5

    # KD during fine-tuning
    temperature: float = 2.0
    alpha: float = 0.5
    finetune_hidden_weight: float = 0.0

    # KD during pretraining
    corpus: list[str] = field(default_factory=lambda: ["task"])
    corpus_max_sentences: int = 20000
    pretrain_epochs: float = 1.0
    pretrain_lr: float = 1e-4
    mlm_weight: float | None = None  # None: 1.0 where the teacher has an MLM head, else 0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    hidden_loss: str = "cosine"
    mlm_probability: float = 0.15
    pretrain_temperature: float = 1.0

    # Run control
    resume: bool = False
    overwrite: bool = False
    trust_remote_code: bool = False

    def validate(self) -> "DistillConfig":
        if self.strategy not in STRATEGIES:
            raise KDCompressError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.layer_selection not in LAYER_SELECTIONS:
            raise KDCompressError(f"unknown layer selection {self.layer_selection!r}; choose uniform or bottom")
        if self.hidden_loss not in ("cosine", "mse"):
            raise KDCompressError(f"unknown hidden-state loss {self.hidden_loss!r}; choose cosine or mse")
        if self.student_layers < 1:
            raise KDCompressError("--student-layers must be at least 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise KDCompressError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0 or self.pretrain_temperature <= 0:
            raise KDCompressError("temperatures must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise KDCompressError("--max-steps must be at least 1")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise KDCompressError("--batch-size and --grad-accum must be at least 1")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise KDCompressError("--mixed-precision must be auto, no, fp16 or bf16")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KDCompressError(f"unknown distill setting(s) {', '.join(unknown)}; see `kdcompress distill --help`")
        return cls(**values)
