"""Typer options generated from a settings dataclass: names, types, defaults and help come from its fields.

`settings_command(app, "export-onnx", ExportConfig, ...)` registers a command whose options are every
field of the class that may come from the command line (`setting(cli=True)`), each spelled
`--field-name` (booleans `--x/--no-x`), typed from the field (lists as comma-separated strings, as
`Settings.from_dict` reads them), shown with the field's help and default, and None when not given,
so that the `--config` file's table, then the dataclass default, fill it. The command body receives
the given values as keyword arguments, and only says what is special about its command.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from kdcompress.settings import Settings

# How a setting is spelled where `--field-name` (booleans `--field-name/--no-field-name`) is not it: one
# table for every command, since a field name means the same thing wherever it appears.
SPELLINGS: dict[str, tuple[str, ...]] = {
    "resume": ("--resume",),
    "overwrite": ("--overwrite",),
    "trust_remote_code": ("--trust-remote-code",),
    "freeze_embeddings": ("--freeze-embeddings/--train-embeddings",),
    "cls_only_last_layer": ("--cls-only-last-layer/--full-last-layer",),
    "keep_embeddings_fp32": ("--keep-embeddings-fp32/--quantize-embeddings",),
}
# List settings given by repeating the option rather than as one comma-separated string.
REPEATED = frozenset({"corpus"})


def escape(text: str) -> str:
    """Help text as Typer's rich markup shows it literally ("[distill]" would otherwise vanish)."""
    return text.replace("[", "\\[")


def _command_line_type(hint: Any) -> Any:
    """The type Typer parses: X for `X | None`, str for lists (split by the settings class)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return str
    return hint


def _bare_help(cls: type[Settings], name: str) -> str:
    """The field's help without its default: for what must be given (an argument, a required option)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("help", "")  # type: ignore[arg-type]


def cli_fields(cls: type[Settings]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]  # type: ignore[arg-type]


def option_parameter(cls: type[Settings], name: str, *, flags: Sequence[str] = (), help_suffix: str = "",
                     required: bool = False, default: Any = None) -> inspect.Parameter:
    """One keyword parameter whose Typer option comes from `cls`'s field `name` (None when not given)."""
    typed = list[str] if name in REPEATED else _command_line_type(cls.hints()[name])
    dashed = "--" + name.replace("_", "-")
    spelled = SPELLINGS.get(name) or ((f"{dashed}/--no-{name.replace('_', '-')}",) if typed is bool else (dashed,))
    if required:
        option = typer.Option(*spelled, *flags, help=escape(_bare_help(cls, name) + help_suffix))
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[typed, option])
    option = typer.Option(*spelled, *flags, help=escape(cls.field_help(name) + help_suffix))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[Optional[typed], option])


def config_parameter(table: str, *, required: bool = False, help_text: str | None = None) -> inspect.Parameter:
    help_text = help_text or (f"TOML file with a [{table}] table holding any of these settings "
                              "(command-line options win).")
    option = typer.Option("--config", help=escape(help_text))
    if required:
        return inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Path, option])
    return inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[Path], option])


def argument_parameter(cls: type[Settings], name: str) -> inspect.Parameter:
    """A required positional argument from `cls`'s field `name` (e.g. MODEL_DIR)."""
    argument = typer.Argument(help=escape(_bare_help(cls, name)), metavar=name.upper(), show_default=False)
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, argument])


def settings_parameters(cls: type[Settings], *, only: Sequence[str] | None = None, skip: Sequence[str] = (),
                        flags: dict[str, Sequence[str]] | None = None, help_suffix: str = "") -> list[inspect.Parameter]:
    """An option for every command-line field of `cls` (or those named in `only`), in field order."""
    names = [f.name for f in cli_fields(cls)] if only is None else list(only)
    return [option_parameter(cls, name, flags=(flags or {}).get(name, ()), help_suffix=help_suffix)
            for name in names if name not in skip]


def settings_command(app: typer.Typer, name: str, parameters: Sequence[inspect.Parameter],
                     wrap: Callable[[Callable], Callable] = lambda fn: fn) -> Callable[[Callable], Callable]:
    """Register the decorated body as command `name` of `app`, taking `parameters`; the body gets them as
    keyword arguments. `wrap` decorates the command (e.g. turning KDCompressError into one line)."""

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def command(**values: Any) -> Any:
            return body(**values)

        del command.__wrapped__  # Typer must read the signature below, not the body's
        ordered = sorted(parameters, key=lambda p: p.kind)  # positional arguments first
        command.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in ordered}
        app.command(name)(wrap(command))
        return body

    return decorate


def given(values: dict[str, Any], *drop: str) -> dict[str, Any]:
    """The options actually given (not None), without `config` and the names in `drop`."""
    return {k: v for k, v in values.items() if k not in ("config", *drop) and v is not None}
