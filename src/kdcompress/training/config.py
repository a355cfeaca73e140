"""Every setting of a `distill` (and `finetune-teacher`) run, as one dataclass (written whole to distill.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdcompress.errors import KDCompressError
from kdcompress.settings import MIN_MAX_LENGTH, Settings, setting
from kdcompress.training.strategies import (STRATEGY_NAMES, STRATEGY_TABLE, default_strategy, get_strategy,
                                            strategies_help)

LAYER_SELECTIONS = ("uniform", "bottom", "top")
HIDDEN_LOSSES = ("cosine", "mse")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
KD_TRANSFERS = ("source", "corpus", "source+corpus")
INIT_SOURCES = ("teacher", "finetuned-teacher")
DEFAULT_TEACHER = "bert-base-multilingual-cased"


@dataclass
class DistillConfig(Settings):
    table = "distill"

    # What to distill
    teacher: str = setting(DEFAULT_TEACHER, help="Hub id or local model directory.")
    task: str = setting("sib200", help="sib200, xnli or pawsx.")
    data_dir: str | None = setting(None, help="Local data folder laid out like shared/data "
                                   "(else $KDCOMPRESS_DATA_DIR, else the hub).")
    source_lang: str = setting("en", help="Language the task is trained on.")
    target_langs: list[str] = setting(factory=list, help="Comma-separated zero-shot languages, or 'all' (their "
                                      "unlabeled text feeds pretraining KD and vocabulary trimming).")
    strategy: str | None = setting(None, help=strategies_help() + ". Default: transfer where --target-langs are "
                                   "given, else finetune.")
    out: str = setting("", help="Output model directory.")

    # Student shape
    student_layers: int = setting(6, help="Layers copied from the teacher; 0 makes a static student (token "
                                  "embeddings distilled from the teacher, mean pooling, linear head; no transformer "
                                  "layer; init_from and layer_selection do not apply to it).")
    student_hidden: int | None = setting(None, help="Hidden width of a narrower student (multiple of the head size; "
                                         "a static student: its PCA width, default 256).")
    layer_selection: str = setting("uniform", help="Which teacher layers the student copies: uniform (every k-th, "
                                   "ending at the top), bottom or top.")
    trim_vocab: bool = setting(False, help="Keep only tokens seen in the corpus of the chosen languages.")
    trim_vocab_characters: bool = setting(True, help="With --trim-vocab, also keep every one-character token, so that "
                                          "text outside the corpus splits into smaller known tokens instead of "
                                          "unknown ones (about 15k more tokens for XLM-R's vocabulary).")
    trim_vocab_corpus: list[str] = setting(factory=list, help="With --trim-vocab, more text of the languages served "
                                           "whose tokens the vocabulary also keeps, read for trimming only (not as "
                                           "training text): e.g. task:train (all of it, not the transfer set's sample) "
                                           "and a folder built by `kdcompress corpus`.")
    trim_vocab_min_count: int = setting(1, help="A token of --trim-vocab-corpus is kept when it occurs at least this "
                                        "often there (2 drops the one-off tokens: a smaller file).")
    init_from: str = setting("teacher", help="Which teacher's layers a student without pretraining KD copies: teacher "
                             "(the general one) or finetuned-teacher (the one fine-tuned on the source language).")

    # Shared training options
    max_length: int = setting(128, help="Truncation length in tokens (at most the model's positions).")
    batch_size: int = setting(16, help="Examples per optimizer step and process.")
    grad_accum: int = setting(1, help="Gradient accumulation steps.")
    lr: float = setting(5e-5, help="Student fine-tuning learning rate.")
    # A static student (embeddings + head, no layers, L2-normalised pooled vector) learns far slower at a
    # transformer's rate; its own setting lets one [distill] table serve both kinds of student.
    static_lr: float = setting(2e-3, help="Fine-tuning learning rate of a static student (--student-layers 0).")
    warmup_ratio: float = setting(0.1, help="Share of the steps with a linear learning-rate warm-up.")
    weight_decay: float = setting(0.01, help="AdamW weight decay.")
    epochs: float = setting(3.0, help="Student fine-tuning epochs.")
    max_steps: int | None = setting(None, help="Cap on optimizer steps of every stage (quick runs).")
    seed: int = setting(42, help="Seed of the data order, masking and fresh heads.")
    mixed_precision: str = setting("auto", help="auto | no | fp16 | bf16 (auto: bf16/fp16 on GPUs, fp32 on CPUs).")
    save_every: int = setting(50, help="Checkpoint every N optimizer steps.")
    freeze_embeddings: bool = setting(False, help="Never train the word embeddings (faster; keeps unseen-language "
                                      "tokens as pretrained).")
    evaluate: bool = setting(True, help="Closing dev accuracy per language, into distill.json.")
    eval_limit: int | None = setting(None, help="Dev examples per language for the closing evaluation (default: all).")

    # Teacher fine-tuning (when the teacher is not yet fine-tuned on the task)
    finetuned_teacher: str | None = setting(None, help="A teacher already fine-tuned on the task (e.g. from "
                                            "`kdcompress finetune-teacher`), used for KD in fine-tuning; --teacher "
                                            "stays the general teacher the student is built from.")
    teacher_epochs: float = setting(3.0, help="Teacher fine-tuning epochs.")
    teacher_lr: float = setting(5e-5, help="Teacher fine-tuning learning rate.")

    # KD during fine-tuning
    temperature: float = setting(2.0, help="KD temperature T for fine-tuning KD.")
    alpha: float = setting(0.5, help="Weight of the KD term against cross-entropy.")
    finetune_hidden_weight: float = setting(0.0, help="Hidden-state loss weight in fine-tuning KD.")

    teacher_logits_cache: str | None = setting(None, help="Folder that keeps the fine-tuned teacher's logits on "
                                               "the KD training set, reused by later students of the same teacher, "
                                               "texts and --max-length (compress sets it).")

    kd_transfer: str = setting("source", help="Text the fine-tuned teacher's soft labels cover in KD during "
                               "fine-tuning: source (the labelled source-language data), corpus (unlabeled --corpus "
                               "text of the source and target languages; cross-entropy stays on the source labels) "
                               "or source+corpus. No target-language label is ever read.")

    # KD during pretraining
    general_student: str | None = setting(None, help="A general student made by `distill --strategy general`, "
                                          "reused instead of running KD during pretraining again (pretrain, both).")
    corpus: list[str] = setting(factory=lambda: ["task"], help="Unlabeled text for pretraining KD: 'task' (its "
                                "train/dev text; 'task:train' for train only), a .txt "
                                "file/folder (e.g. from `kdcompress corpus`), or hub:DATASET[:CONFIG]. Repeatable.")
    corpus_max_sentences: int = setting(20000, help="Cap on corpus sentences.")
    pretrain_epochs: float = setting(1.0, help="Epochs over the corpus for pretraining KD.")
    pretrain_lr: float = setting(1e-4, help="Pretraining KD learning rate.")
    pretrain_batch_size: int | None = setting(None, help="Examples per optimizer step of pretraining KD (default: "
                                              "--batch-size); a large corpus on a GPU wants more than fine-tuning.")
    mlm_weight: float | None = setting(None, help="Soft masked-LM loss weight in pretraining KD "
                                       "(default: 1 where the teacher has an MLM head, else 0).")
    hidden_weight: float = setting(1.0, help="Hidden-state loss weight in pretraining KD.")
    attention_weight: float = setting(1.0, help="Self-attention relation loss weight in pretraining KD.")
    hidden_loss: str = setting("cosine", help="cosine or mse.")
    mlm_probability: float = setting(0.15, help="Share of tokens masked for the masked-LM loss.")
    pretrain_temperature: float = setting(1.0, help="KD temperature of the masked-LM loss.")

    # Run control
    resume: bool = setting(False, help="Continue the unfinished run in OUT.partial.")
    overwrite: bool = setting(False, help="Replace an existing OUT.")
    trust_remote_code: bool = setting(False, help="Run Python code shipped in the teacher's folder or hub repo. "
                                      "Command line only, never from a config file.", file=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str | None = None) -> "DistillConfig":
        """Defaults < the strategy row's defaults < the given values: `--strategy transfer` alone is the recipe."""
        values = {key.replace("-", "_"): value for key, value in values.items()}
        strategy = values.get("strategy") or default_strategy(values.get("target_langs"))
        row = STRATEGY_TABLE.get(strategy) if isinstance(strategy, str) else None
        defaults = row.defaults if row else {}
        return super().from_dict({**defaults, **values, "strategy": strategy}, where=where)

    def check(self) -> "DistillConfig":
        if self.strategy is None:  # built directly rather than through from_dict
            self.strategy = default_strategy(self.target_langs)
        get_strategy(self.strategy)
        _one_of("layer_selection", self.layer_selection, LAYER_SELECTIONS)
        _one_of("hidden_loss", self.hidden_loss, HIDDEN_LOSSES)
        _one_of("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _at_least(MIN_MAX_LENGTH, max_length=self.max_length)
        _at_least(0, student_layers=self.student_layers)
        _at_least(1, student_hidden=self.student_hidden, batch_size=self.batch_size,
                  pretrain_batch_size=self.pretrain_batch_size, grad_accum=self.grad_accum,
                  max_steps=self.max_steps, save_every=self.save_every, eval_limit=self.eval_limit,
                  corpus_max_sentences=self.corpus_max_sentences)
        _positive(lr=self.lr, static_lr=self.static_lr, teacher_lr=self.teacher_lr, pretrain_lr=self.pretrain_lr,
                  epochs=self.epochs, teacher_epochs=self.teacher_epochs, pretrain_epochs=self.pretrain_epochs,
                  temperature=self.temperature, pretrain_temperature=self.pretrain_temperature)
        _non_negative(weight_decay=self.weight_decay, finetune_hidden_weight=self.finetune_hidden_weight,
                      mlm_weight=self.mlm_weight, hidden_weight=self.hidden_weight,
                      attention_weight=self.attention_weight)
        if not 0.0 <= self.alpha <= 1.0:
            raise KDCompressError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise KDCompressError(f"--warmup-ratio must lie in [0, 1), got {self.warmup_ratio}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise KDCompressError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        _one_of("kd_transfer", self.kd_transfer, KD_TRANSFERS)
        _one_of("init_from", self.init_from, INIT_SOURCES)
        strategy = get_strategy(self.strategy)
        if strategy.needs_targets and not self.target_langs:
            raise KDCompressError(f"--strategy {self.strategy} distils on the target languages' unlabeled text; pass "
                                  "--target-langs (e.g. all), or use --strategy finetune for English-only KD")
        if self.kd_transfer != "source" and not strategy.uses_finetuned_teacher:
            raise KDCompressError(f"--kd-transfer {self.kd_transfer} needs KD during fine-tuning; use --strategy "
                                  "transfer, finetune or both, or --kd-transfer source")
        if self.general_student and "pretrain_kd" not in strategy.stages:
            raise KDCompressError(f"--general-student replaces KD during pretraining, which --strategy "
                                  f"{self.strategy} does not run; use pretrain or both, or drop --general-student")
        if self.init_from == "finetuned-teacher" and "pretrain_kd" in strategy.stages:
            raise KDCompressError("--init-from finetuned-teacher applies to students without pretraining KD (none, "
                                  "finetune, transfer); pretrain and both start from the general student")
        if self.init_from == "finetuned-teacher" and not strategy.uses_finetuned_teacher and not self.finetuned_teacher:
            raise KDCompressError("--init-from finetuned-teacher with --strategy none needs --finetuned-teacher")
        if self.general_student and self.strategy == "general":
            raise KDCompressError("--strategy general makes a general student; drop --general-student")
        if not self.corpus:
            raise KDCompressError("--corpus is empty; pass 'task', a .txt file or folder, or hub:DATASET")
        if self.trim_vocab_min_count < 1:
            raise KDCompressError(f"--trim-vocab-min-count must be at least 1, got {self.trim_vocab_min_count}")
        if self.student_layers == 0:
            self._check_static(strategy)
        return self

    @property
    def is_static(self) -> bool:
        return self.student_layers == 0

    @property
    def student_lr(self) -> float:
        return self.static_lr if self.is_static else self.lr

    def _check_static(self, strategy) -> None:
        """What a static student (no layers, no hidden states) cannot do; init_from and layer_selection are ignored."""
        if "pretrain_kd" in strategy.stages:
            raise KDCompressError(f"--strategy {self.strategy} runs KD during pretraining, which matches hidden states "
                                  "and attention a static student (--student-layers 0) does not have; use finetune "
                                  "(optionally --kd-transfer source+corpus) or none")
        if self.finetune_hidden_weight:
            raise KDCompressError("--finetune-hidden-weight needs hidden states, which a static student "
                                  "(--student-layers 0) does not have; set it to 0")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise KDCompressError(f"{_flag(name)} {value!r} is not one of {', '.join(choices)}")


def _at_least(minimum: int, **values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < minimum:
            raise KDCompressError(f"{_flag(name)} must be at least {minimum}, got {value}")


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise KDCompressError(f"{_flag(name)} must be positive, got {value}")


def _non_negative(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise KDCompressError(f"{_flag(name)} must be 0 or more, got {value}")


__all__ = ["DistillConfig", "DEFAULT_TEACHER", "LAYER_SELECTIONS", "STRATEGY_NAMES"]
