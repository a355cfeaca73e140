"""`distill`: build a student from a teacher and train it with one of the four strategies.

    none      build the student from the teacher, fine-tune it on the source language (no KD)
    finetune  KD during fine-tuning, from a teacher fine-tuned on the source language
    pretrain  KD during pretraining on unlabeled multilingual text, then plain fine-tuning
    both      KD during pretraining, then KD during fine-tuning

Stages talk through model directories inside `<out>.partial/stages/`; a finished stage is
never redone, and an interrupted one restarts from its last checkpoint with `resume=True`.
Only a complete run is renamed to `<out>`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import PartialState
from rich.console import Console
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

import kdcompress
from kdcompress.bench.machine import library_versions
from kdcompress.training import teacher_loading as teachers
from kdcompress.training.batching import TextBatcher, token_id_map
from kdcompress.training.config import DistillConfig
from kdcompress.training.loop import LoopSettings
from kdcompress.training.recipes.finetune import finetune
from kdcompress.training.recipes.finetune_kd import finetune_kd
from kdcompress.training.recipes.pretrain_kd import pretrain_kd
from kdcompress.training.students import build_student, plan_student
from kdcompress.training.vocab import collect_token_ids, trim_tokenizer
from kdcompress.data.corpus import load_corpus
from kdcompress.data.languages import parse_lang_list
from kdcompress.data.tasks import Example, Task, data_dir_from_env, fingerprint, get_task, normalise_lang
from kdcompress.errors import KDCompressError
from kdcompress.io import refuse_existing, write_json_atomic
from kdcompress.quiet import quiet_libraries

console = Console(stderr=True)
_RUN_CONTROL = ("resume", "overwrite")


def distill(config: DistillConfig | None = None, **settings) -> Path:
    """Distill a student; returns the output model directory. Keyword settings override `config`."""
    quiet_libraries()
    return _Run(_make_config(config, settings)).execute()


def finetune_teacher(config: DistillConfig | None = None, **settings) -> Path:
    """Fine-tune the teacher on the source language (once), to share it across many `distill` runs
    through `finetuned_teacher=`; returns the output model directory."""
    quiet_libraries()
    return _Run(_make_config(config, settings)).execute_teacher_only()


def _make_config(config: DistillConfig | None, settings: dict) -> DistillConfig:
    cfg = dataclasses.replace(config or DistillConfig(), **settings)
    if isinstance(cfg.target_langs, str):
        cfg.target_langs = parse_lang_list(cfg.target_langs)
    return cfg.validate()


class _Run:
    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        self.task: Task = get_task(cfg.task)
        self.source = normalise_lang(self.task, cfg.source_lang)
        targets = self.task.languages if list(cfg.target_langs) == ["all"] else cfg.target_langs
        self.targets = [lang for lang in dict.fromkeys(normalise_lang(self.task, t) for t in targets)
                        if lang != self.source]
        self.data_dir = data_dir_from_env(cfg.data_dir)
        self.out = Path(cfg.out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self.state = PartialState()
        self.record: dict = {"stages": []}

    # --- run directory -------------------------------------------------------------------
    def _prepare_work_dir(self) -> None:
        refuse_existing(self.out, overwrite=self.cfg.overwrite)
        run_file = self.work / "run.json"
        wanted = {k: v for k, v in self.cfg.to_dict().items() if k not in _RUN_CONTROL}
        if self.cfg.resume:
            if not run_file.is_file():
                raise KDCompressError(f"nothing to resume: no unfinished run at {self.work}; drop --resume")
            saved = json.loads(run_file.read_text())
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            if changed:
                raise KDCompressError(
                    f"--resume with different settings ({', '.join(changed)}); rerun with the original settings"
                )
            console.print(f"resuming the unfinished run in {self.work}")
        elif self.work.exists():
            raise KDCompressError(
                f"an unfinished run is in {self.work}; pass --resume to continue it, or delete that folder"
            )
        if self.state.is_main_process:
            (self.work / "stages").mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, wanted)
        self.state.wait_for_everyone()

    def _freeze_embeddings_if_asked(self, model: PreTrainedModel) -> PreTrainedModel:
        """Training updates few rows of a 250k-token embedding, while weight decay and Adam still touch (and
        cost time on) every row, and drift the unseen-language rows away from the teacher's; freezing avoids both."""
        if self.cfg.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    def _settings(self, stage: str, *, lr: float, epochs: float) -> LoopSettings:
        c = self.cfg
        return LoopSettings(stage=stage, lr=lr, epochs=epochs, batch_size=c.batch_size, seed=c.seed,
                            warmup_ratio=c.warmup_ratio, weight_decay=c.weight_decay, max_steps=c.max_steps,
                            grad_accum=c.grad_accum, save_every=c.save_every, mixed_precision=c.mixed_precision)

    def _stage(self, name: str, train) -> Path:
        """Run `train(checkpoint_dir) -> (model, tokenizer, LoopResult, settings)` once; reuse a finished stage."""
        stage_dir = self.work / "stages" / name
        marker = stage_dir / "stage.json"
        if marker.is_file():
            console.print(f"[dim]stage {name}: already done, reused[/]")
            self.record["stages"].append(json.loads(marker.read_text()))
            return stage_dir
        model, tokenizer, result, settings = train(self.work / "checkpoints" / name)
        summary = {"name": name, "steps": result.steps, "examples": result.examples,
                   "wall_seconds": round(result.wall_seconds, 2), "settings": dataclasses.asdict(settings),
                   "history": result.history}
        if self.state.is_main_process:
            tmp = stage_dir.with_name(f".{name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / "stage.json", summary)
            os.replace(tmp, stage_dir)
            shutil.rmtree(self.work / "checkpoints" / name, ignore_errors=True)
        self.state.wait_for_everyone()
        self.record["stages"].append(summary)
        return stage_dir

    # --- data ---------------------------------------------------------------------------
    def _train_batcher(self, tokenizer, id_map=None) -> TextBatcher:
        examples = self.train_examples
        return TextBatcher(tokenizer, [e.text for e in examples], [e.text_pair for e in examples],
                           [e.label for e in examples], max_length=self.cfg.max_length, id_map=id_map)

    def _corpus(self) -> list[str]:
        if not hasattr(self, "_corpus_cache"):
            self._corpus_cache = load_corpus(self.cfg.corpus, task=self.task, langs=[self.source, *self.targets],
                                             data_dir=self.data_dir, max_sentences=self.cfg.corpus_max_sentences,
                                             seed=self.cfg.seed)
            self.record["corpus"] = {"specs": self.cfg.corpus, "sentences": len(self._corpus_cache),
                                     "fingerprint": fingerprint([Example(t, None, -1) for t in self._corpus_cache])}
        return self._corpus_cache

    # --- the pipeline ---------------------------------------------------------------------
    def _setup(self, *, need_student: bool = True) -> bool:
        """Load and check everything a stage needs before any work starts; returns whether the teacher is fine-tuned."""
        cfg = self.cfg
        self.teacher_config = teacher_config = teachers.load_teacher_config(
            cfg.teacher, trust_remote_code=cfg.trust_remote_code)
        teacher_is_finetuned = teachers.is_finetuned_for(teacher_config, self.task)
        self.train_examples = self.task.load("train", self.source, data_dir=self.data_dir)
        self.tokenizer = teachers.load_tokenizer(cfg.teacher)
        self.keep_ids = self._kept_token_ids() if cfg.trim_vocab and need_student else None
        self.student_tokenizer = trim_tokenizer(self.tokenizer, self.keep_ids) if self.keep_ids else self.tokenizer
        self.id_map = (token_id_map(teacher_config.vocab_size, self.keep_ids, self.student_tokenizer.unk_token_id)
                       if self.keep_ids else None)
        self.plan = plan_student(teacher_config, layers=cfg.student_layers, hidden=cfg.student_hidden,
                                 selection=cfg.layer_selection,
                                 vocab_size=len(self.keep_ids) if self.keep_ids else None) if need_student else None
        self._prepare_work_dir()
        self.record.update(teacher={"name": cfg.teacher, "model_type": teacher_config.model_type,
                                    "layers": teacher_config.num_hidden_layers, "hidden": teacher_config.hidden_size,
                                    "vocab_size": teacher_config.vocab_size, "given_finetuned": teacher_is_finetuned},
                           data={"train": {"lang": self.source, "examples": len(self.train_examples),
                                           "fingerprint": fingerprint(self.train_examples)}})
        return teacher_is_finetuned

    def _given_finetuned_teacher(self, teacher_is_finetuned: bool) -> str | None:
        """A teacher already fine-tuned on the task: --finetuned-teacher, or --teacher itself when it is one."""
        cfg = self.cfg
        if cfg.finetuned_teacher:
            config = teachers.load_teacher_config(cfg.finetuned_teacher, trust_remote_code=cfg.trust_remote_code)
            if not teachers.is_finetuned_for(config, self.task):
                raise KDCompressError(
                    f"--finetuned-teacher {cfg.finetuned_teacher} is not a sequence classifier for {self.task.name}; "
                    "pass a directory made by `kdcompress finetune-teacher` or leave the option out"
                )
            if config.vocab_size != self.teacher_config.vocab_size:
                raise KDCompressError(
                    "--finetuned-teacher has another vocabulary than --teacher; both must share one tokenizer"
                )
            return cfg.finetuned_teacher
        return cfg.teacher if teacher_is_finetuned else None

    def execute(self) -> Path:
        cfg = self.cfg
        started = time.perf_counter()
        teacher_is_finetuned = self._setup()
        given_finetuned = self._given_finetuned_teacher(teacher_is_finetuned)

        general_dir = None
        if cfg.strategy in ("pretrain", "both"):
            general_dir = self._stage("pretrain_kd", self._pretrain_kd)
        finetuned_teacher_dir = made_teacher = None
        if cfg.strategy in ("finetune", "both"):
            finetuned_teacher_dir = given_finetuned or self._stage("teacher", self._finetune_teacher)
            made_teacher = None if given_finetuned else finetuned_teacher_dir
        if cfg.strategy == "none":
            final = self._stage("student", lambda ckpt: self._finetune_student(ckpt, init_dir=None))
        elif cfg.strategy == "pretrain":
            final = self._stage("student", lambda ckpt: self._finetune_student(ckpt, init_dir=general_dir))
        else:
            final = self._stage("student", lambda ckpt: self._kd_student(ckpt, finetuned_teacher_dir, general_dir))

        self.record["finetuned_teacher"] = str(finetuned_teacher_dir) if given_finetuned else None
        self._publish(final, made_teacher, started)
        return self.out

    def execute_teacher_only(self) -> Path:
        started = time.perf_counter()
        if self._setup(need_student=False):
            raise KDCompressError(f"teacher {self.cfg.teacher} is already fine-tuned on {self.task.name}; use it as it is")
        self.record["role"] = "fine-tuned teacher"
        self._publish(self._stage("teacher", self._finetune_teacher), None, started, student=False)
        return self.out

    def _kept_token_ids(self) -> list[int]:
        texts = [e.text for e in self.train_examples] + [e.text_pair for e in self.train_examples if e.text_pair]
        keep = collect_token_ids(self.tokenizer, texts + self._corpus())
        self.record["vocab"] = {"teacher": len(self.tokenizer), "kept": len(keep)}
        return keep

    def _new_student(self, student_class: type[PreTrainedModel], general_teacher: PreTrainedModel | None = None,
                     **overrides) -> PreTrainedModel:
        teacher = general_teacher or teachers.load_general_teacher(self.cfg.teacher)[0]
        torch.manual_seed(self.cfg.seed)  # fresh heads start the same in every run with this seed
        return build_student(teacher, self.plan, student_class, keep_token_ids=self.keep_ids, config_overrides=overrides)

    def _label_overrides(self) -> dict:
        labels = self.task.labels
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {label: i for i, label in enumerate(labels)}}

    def _classifier_class(self) -> type[PreTrainedModel]:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(self.teacher_config)]

    def _pretrain_kd(self, checkpoint_dir: Path):
        cfg = self.cfg
        teacher, has_mlm = teachers.load_general_teacher(cfg.teacher, trust_remote_code=cfg.trust_remote_code)
        if cfg.mlm_weight and not has_mlm:
            raise KDCompressError(
                f"teacher {cfg.teacher} has no masked-LM head, so --mlm-weight cannot be used; set it to 0 "
                "(hidden-state and attention losses still apply)"
            )
        mlm_weight = (1.0 if has_mlm else 0.0) if cfg.mlm_weight is None else cfg.mlm_weight
        if mlm_weight == 0 and cfg.hidden_weight == 0 and cfg.attention_weight == 0:
            raise KDCompressError("every pretraining KD loss has weight 0; give --hidden-weight or --attention-weight > 0")
        student = self._freeze_embeddings_if_asked(self._new_student(type(teacher), teacher))
        corpus = self._corpus()
        settings = self._settings("pretrain KD", lr=cfg.pretrain_lr, epochs=cfg.pretrain_epochs)
        result = pretrain_kd(
            student=student, teacher=teacher, batcher=TextBatcher(self.tokenizer, corpus, max_length=cfg.max_length),
            settings=settings, checkpoint_dir=checkpoint_dir, resume=cfg.resume, layer_map=self.plan.layer_map,
            use_mlm=mlm_weight > 0, mlm_weight=mlm_weight, hidden_weight=cfg.hidden_weight,
            attention_weight=cfg.attention_weight, hidden_loss=cfg.hidden_loss, temperature=cfg.pretrain_temperature,
            mlm_probability=cfg.mlm_probability, special_ids=self.tokenizer.all_special_ids,
            mask_id=self.tokenizer.mask_token_id, keep_token_ids=self.keep_ids, id_map=self.id_map,
        )
        self.record["pretrain_losses"] = {"mlm": mlm_weight, "hidden": cfg.hidden_weight,
                                          "attention": cfg.attention_weight, "teacher_has_mlm_head": has_mlm}
        return student, self.student_tokenizer, result, settings

    def _finetune_teacher(self, checkpoint_dir: Path):
        cfg = self.cfg
        model = self._freeze_embeddings_if_asked(
            teachers.load_classifier(cfg.teacher, self.task, trust_remote_code=cfg.trust_remote_code))
        settings = self._settings("teacher fine-tuning", lr=cfg.teacher_lr, epochs=cfg.teacher_epochs)
        result = finetune(model=model, batcher=self._train_batcher(self.tokenizer), settings=settings,
                          checkpoint_dir=checkpoint_dir, resume=cfg.resume)
        return model, self.tokenizer, result, settings

    def _student_from(self, init_dir: Path | None) -> PreTrainedModel:
        if init_dir is None:
            student = self._new_student(self._classifier_class(), **self._label_overrides())
        else:
            torch.manual_seed(self.cfg.seed)
            student = AutoModelForSequenceClassification.from_pretrained(init_dir, **self._label_overrides())
        return self._freeze_embeddings_if_asked(student)

    def _finetune_student(self, checkpoint_dir: Path, init_dir: Path | None):
        cfg = self.cfg
        student = self._student_from(init_dir)
        settings = self._settings("student fine-tuning", lr=cfg.lr, epochs=cfg.epochs)
        result = finetune(model=student, batcher=self._train_batcher(self.tokenizer, self.id_map), settings=settings,
                          checkpoint_dir=checkpoint_dir, resume=cfg.resume, id_map=self.id_map)
        return student, self.student_tokenizer, result, settings

    def _kd_student(self, checkpoint_dir: Path, teacher_dir, init_dir: Path | None):
        cfg = self.cfg
        student = self._student_from(init_dir)
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
        settings = self._settings("student KD fine-tuning", lr=cfg.lr, epochs=cfg.epochs)
        result = finetune_kd(student=student, teacher=teacher, batcher=self._train_batcher(self.tokenizer),
                             settings=settings, checkpoint_dir=checkpoint_dir, resume=cfg.resume,
                             temperature=cfg.temperature, alpha=cfg.alpha, hidden_weight=cfg.finetune_hidden_weight,
                             hidden_loss=cfg.hidden_loss, layer_map=self.plan.layer_map, id_map=self.id_map)
        return student, self.student_tokenizer, result, settings

    # --- output ---------------------------------------------------------------------------
    def _dev_accuracy(self, model_dir: Path) -> dict:
        """Dev-split accuracy per language, with the same runner and preprocessing `bench` uses."""
        from kdcompress.bench import accuracy as acc
        from kdcompress.bench.runners import load_runner

        device = "cuda" if torch.cuda.is_available() else "cpu"
        runner = load_runner(model_dir, device, torch.get_num_threads(), max_length=self.cfg.max_length)
        mapping = acc.label_mapping(runner.labels, self.task, model_name=str(model_dir))
        langs = [self.source, *self.targets]
        examples = {lang: acc.sample_examples(self.task.load("dev", lang, data_dir=self.data_dir), self.cfg.eval_limit)
                    for lang in langs}
        result = {"split": "dev", **acc.summarize_languages(acc.evaluate(runner, mapping, examples),
                                                              self.source, self.targets)}
        _print_dev_accuracy(result, "student" if self.plan else "teacher")
        return result

    def _publish(self, final_stage: Path, teacher_stage: Path | None, started: float, *, student: bool = True) -> None:
        """Assemble the output directory inside the work folder, then rename it into place at once."""
        if not self.state.is_main_process:
            return
        cfg = self.cfg
        assembled = self.work / "output"
        shutil.rmtree(assembled, ignore_errors=True)
        shutil.copytree(final_stage, assembled, ignore=shutil.ignore_patterns("stage.json"))
        if teacher_stage is not None:
            shutil.copytree(teacher_stage, assembled / "teacher", ignore=shutil.ignore_patterns("stage.json"))
        with safe_open(str(assembled / "model.safetensors"), "pt") as weights:
            n_params = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
        self.record.update(
            kdcompress_version=kdcompress.__version__,
            config=cfg.to_dict(),
            task={"name": self.task.name, "labels": list(self.task.labels), "source_lang": self.source,
                  "target_langs": self.targets},
            parameters=n_params,
            student={**self.plan.to_dict(), "vocab_trimmed": self.keep_ids is not None} if student else None,
            wall_seconds=round(time.perf_counter() - started, 2),
            versions=library_versions(),
        )
        if cfg.evaluate:
            self.record["dev_accuracy"] = self._dev_accuracy(assembled)
        write_json_atomic(assembled / "distill.json", self.record)
        if self.out.exists():  # only with overwrite=True, checked before any work
            shutil.rmtree(self.out)
        os.replace(assembled, self.out)
        shutil.rmtree(self.work)
        console.print(f"[green]{'student' if student else 'fine-tuned teacher'} written to {self.out}[/] ({n_params / 1e6:.1f}M parameters, "
                      f"{self.record['wall_seconds']:.0f} s)")


def _print_dev_accuracy(result: dict, what: str) -> None:
    targets = result["target_average"]
    console.print(f"{what} dev accuracy: source {100 * result['source']:.1f}%"
                  + (f", target average {100 * targets:.1f}% over {len(result['targets'])} languages" if targets else ""))
