"""The `kdcompress` command line: a thin Typer layer over the Python API of the same shape."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from kdcompress.errors import KDCompressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
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
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; partial work was not kept (use --resume where offered)")
            raise typer.Exit(code=130) from None

    return wrapper


# --- distill ------------------------------------------------------------------------------
# (section owned by the distillation engine)

# --- import-teacher -----------------------------------------------------------------------
# (section owned by the teacher importers)

# --- export-onnx --------------------------------------------------------------------------
# (section owned by export / quantization)

# --- bench --------------------------------------------------------------------------------
# (section owned by the benchmark harness)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
