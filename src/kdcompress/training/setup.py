"""Everything a `distill` run needs, loaded and checked before any output exists: one frozen `RunSetup`.

Each check here is one that used to fail later, after a `.partial` folder had been made or after hours
of training: the teacher's config, weights and tokenizer, the fine-tuned teacher, the task files, the
corpus, the student plan and the sequence length.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from kdcompress.console import stderr_console
from kdcompress.data.corpus import load_corpus
from kdcompress.data.tasks import Example, Task, data_dir_from_env, fingerprint, get_task, resolve_languages
from kdcompress.errors import KDCompressError
from kdcompress.io import check_writable_output
from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable, model_max_positions
from kdcompress.training import teacher_loading
from kdcompress.training.batching import token_id_map
from kdcompress.training.config import DistillConfig
from kdcompress.training.strategies import Strategy, get_strategy
from kdcompress.training.transfer_set import TransferSet, build_transfer_set
from kdcompress.training.students import StudentPlan, plan_student
from kdcompress.training.vocab import character_token_ids, collect_token_ids, trim_tokenizer

console = stderr_console()


@dataclass(frozen=True)
class RunSetup:
    cfg: DistillConfig
    strategy: Strategy
    task: Task
    source: str
    targets: list[str]
    data_dir: Path | None
    teacher_config: PretrainedConfig
    teacher_is_finetuned: bool
    given_finetuned_teacher: str | None  # --finetuned-teacher, or --teacher itself when it is fine-tuned
    train_examples: list[Example]
    tokenizer: PreTrainedTokenizerBase  # the teacher's: teacher and student see the same pieces
    student_tokenizer: PreTrainedTokenizerBase  # the trimmed one where --trim-vocab
    keep_ids: list[int] | None
    id_map: torch.Tensor | None
    plan: StudentPlan | None  # None for finetune-teacher
    corpus: list[str] | None  # unlabeled text, where a stage or trimming needs it
    max_length: int  # --max-length capped at the teacher's positions
    transfer: TransferSet | None  # the text KD during fine-tuning covers (None for finetune-teacher)

    def record(self) -> dict:
        """What distill.json says about the inputs."""
        c = self.teacher_config
        facts = {"teacher": {"name": self.cfg.teacher, "model_type": c.model_type, "layers": c.num_hidden_layers,
                             "hidden": c.hidden_size, "vocab_size": c.vocab_size,
                             "given_finetuned": self.teacher_is_finetuned},
                 "data": {"train": {"lang": self.source, "examples": len(self.train_examples),
                                    "fingerprint": fingerprint(self.train_examples)}}}
        if self.corpus is not None:
            facts["corpus"] = {"specs": self.cfg.corpus, "sentences": len(self.corpus),
                               "fingerprint": fingerprint([Example(t, None, -1) for t in self.corpus])}
        if self.keep_ids is not None:
            facts["vocab"] = {"teacher": len(self.tokenizer), "kept": len(self.keep_ids)}
        if self.transfer is not None and self.transfer.unlabeled:
            facts["transfer_set"] = self.transfer.record()
        if self.cfg.general_student:
            facts["general_student"] = self.cfg.general_student
        return facts


def _check_general_student(path: str, plan: StudentPlan, vocab_size: int) -> None:
    from transformers import AutoConfig

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise KDCompressError(f"--general-student {path} is not a model directory (no config.json); pass the OUT of "
                              "`kdcompress distill --strategy general`")
    config = AutoConfig.from_pretrained(path)
    if config.vocab_size != vocab_size:
        raise KDCompressError(f"--general-student {path} has a vocabulary of {config.vocab_size} tokens, but this run's "
                              f"student has {vocab_size}; build it from the same teacher with the same --trim-vocab "
                              "and corpus")
    wanted = (len(plan.layer_map), plan.hidden_size)
    if (config.num_hidden_layers, config.hidden_size) != wanted:
        raise KDCompressError(f"--general-student {path} has {config.num_hidden_layers} layers x {config.hidden_size}, "
                              f"but --student-layers/--student-hidden ask for {wanted[0]} x {wanted[1]}")
    check_weights_readable(path, what="--general-student")


def _check_local_model(path: str, *, what: str, vocab_size: int) -> None:
    if Path(path).is_dir():
        check_weights_readable(path, what=what)
        check_model_dir_tokenizer(path, vocab_size, what=what)


def _given_finetuned_teacher(cfg: DistillConfig, task: Task, teacher_config: PretrainedConfig,
                             teacher_is_finetuned: bool) -> str | None:
    if not cfg.finetuned_teacher:
        return cfg.teacher if teacher_is_finetuned else None
    config = teacher_loading.load_teacher_config(cfg.finetuned_teacher, trust_remote_code=cfg.trust_remote_code,
                                                 role="--finetuned-teacher")
    if not teacher_loading.is_finetuned_for(config, task):
        raise KDCompressError(
            f"--finetuned-teacher {cfg.finetuned_teacher} is not a sequence classifier for {task.name}; "
            "pass a directory made by `kdcompress finetune-teacher` or leave the option out")
    if config.vocab_size != teacher_config.vocab_size:
        raise KDCompressError("--finetuned-teacher has another vocabulary than --teacher; both must share one tokenizer")
    _check_local_model(cfg.finetuned_teacher, what="--finetuned-teacher", vocab_size=config.vocab_size)
    return cfg.finetuned_teacher


def _capped_max_length(cfg: DistillConfig, teacher_config: PretrainedConfig) -> int:
    limit = model_max_positions(teacher_config)
    if cfg.max_length > limit:
        console.print(f"[yellow]--max-length {cfg.max_length} exceeds the teacher's {limit} positions; using {limit}[/]")
        return limit
    return cfg.max_length


def prepare(cfg: DistillConfig, *, student: bool = True) -> RunSetup:
    """Load and check every input of a run (student=False: only what teacher fine-tuning needs)."""
    if cfg.out:  # --overwrite must never delete what the run reads (a teacher inside OUT, say)
        inputs = [cfg.teacher, cfg.finetuned_teacher, cfg.general_student, cfg.data_dir, *cfg.corpus,
                  *cfg.trim_vocab_corpus]
        check_writable_output(cfg.out, cfg.overwrite, inputs=[p for p in inputs if p and Path(p).expanduser().exists()])
    strategy = get_strategy(cfg.strategy)
    task = get_task(cfg.task)
    source, targets = resolve_languages(task, cfg.source_lang, cfg.target_langs, default_all=False)
    data_dir = data_dir_from_env(cfg.data_dir)
    teacher_config = teacher_loading.load_teacher_config(cfg.teacher, trust_remote_code=cfg.trust_remote_code)
    _check_local_model(cfg.teacher, what="teacher", vocab_size=teacher_config.vocab_size)
    teacher_is_finetuned = teacher_loading.is_finetuned_for(teacher_config, task)
    given = _given_finetuned_teacher(cfg, task, teacher_config, teacher_is_finetuned) if student else None
    train_examples = task.load("train", source, data_dir=data_dir)
    tokenizer = teacher_loading.load_tokenizer(cfg.teacher)
    needs_corpus = student and (("pretrain_kd" in strategy.stages and not cfg.general_student) or cfg.trim_vocab
                                or cfg.kd_transfer != "source")
    corpus = load_corpus(cfg.corpus, task=task, langs=[source, *targets], data_dir=data_dir,
                         max_sentences=cfg.corpus_max_sentences, seed=cfg.seed) if needs_corpus else None
    keep_ids = None
    if student and cfg.trim_vocab:
        texts = [e.text for e in train_examples] + [e.text_pair for e in train_examples if e.text_pair]
        keep_ids = collect_token_ids(tokenizer, texts + list(corpus or []))
        if cfg.trim_vocab_corpus:  # read whole (no sentence cap): its only cost is tokenizing it once
            served = load_corpus(cfg.trim_vocab_corpus, task=task, langs=[source, *targets], data_dir=data_dir,
                                 max_sentences=sys.maxsize, seed=cfg.seed)
            keep_ids = sorted(set(keep_ids) | set(collect_token_ids(tokenizer, served,
                                                                    min_count=cfg.trim_vocab_min_count)))
        if cfg.trim_vocab_characters:
            keep_ids = sorted(set(keep_ids) | set(character_token_ids(tokenizer)))
    student_tokenizer = trim_tokenizer(tokenizer, keep_ids) if keep_ids else tokenizer
    id_map = token_id_map(teacher_config.vocab_size, keep_ids, student_tokenizer.unk_token_id) if keep_ids else None
    plan = plan_student(teacher_config, layers=cfg.student_layers, hidden=cfg.student_hidden,
                        selection=cfg.layer_selection,
                        vocab_size=len(keep_ids) if keep_ids else None) if student else None
    if cfg.general_student:
        _check_general_student(cfg.general_student, plan, len(keep_ids) if keep_ids else teacher_config.vocab_size)
    transfer = build_transfer_set(cfg, task, source, targets, data_dir, train_examples, corpus) if student else None
    return RunSetup(cfg=cfg, strategy=strategy, task=task, source=source, targets=targets, data_dir=data_dir,
                    teacher_config=teacher_config, teacher_is_finetuned=teacher_is_finetuned,
                    given_finetuned_teacher=given, train_examples=train_examples, tokenizer=tokenizer,
                    student_tokenizer=student_tokenizer, keep_ids=keep_ids, id_map=id_map, plan=plan,
                    corpus=corpus, max_length=_capped_max_length(cfg, teacher_config), transfer=transfer)
