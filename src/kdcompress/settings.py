"""Each command's settings are one dataclass: its defaults and help are declared once, and the CLI,
TOML tables and the Python API all build it the same way (nanoGPT's configurator.py, typed).

A settings class subclasses `Settings`, gives each field `help=` through `setting(...)`, and may
override `check()` for cross-field rules. `from_dict` refuses unknown names and wrong types in one
line, before any work starts, so a typo in a TOML table never surfaces after hours of training.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from kdcompress.errors import KDCompressError

S = TypeVar("S", bound="Settings")

#: The shortest --max-length any command accepts: [CLS], [SEP] and a few tokens of text. One number for distill,
#: bench and predict, so that a length one command trains with is one the others can serve and measure.
MIN_MAX_LENGTH = 8
_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, help: str, factory: Any = _MISSING, cli: bool = True,
            file: bool = True) -> Any:
    """A dataclass field that carries its own help text (shown by `--help` and by config errors).

    `cli=False` keeps a setting out of the command line (API- and TOML-only, e.g. progress display);
    `file=False` keeps it out of config files (an opt-in a user must type, e.g. trust_remote_code).
    """
    metadata = {"help": help, "cli": cli, "file": file}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is list:
        return f"a list of {_plural(typing.get_args(hint)[0])}"
    if origin is dict:
        return f"a table of {_plural(typing.get_args(hint)[1])}"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    return {int: "whole numbers", float: "numbers", bool: "true/false values", str: "strings"}.get(hint, "values")


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def coerce(value: Any, hint: Any, *, where: str) -> Any:
    """`value` as type `hint`, or one line naming the setting and what it takes.

    Strings are accepted for lists (comma-separated, as typed on a command line) and for numbers only
    where they come from a command line; TOML values must already have the right type.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        refusals = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where=where)
            except KDCompressError as exc:
                refusals.append(str(exc))  # try the union's next type; the message below names them all
        finite = [message for message in refusals if "finite" in message]
        if finite:  # the value had the right type but is inf or nan: say so, not "must be a number"
            raise KDCompressError(finite[0])
        raise KDCompressError(f"{where} must be {_type_name(hint)}, not {value!r}")
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise KDCompressError(f"{where} must be {_type_name(hint)}, not {value!r}")
        return {coerce(k, key_hint, where=where): coerce(v, value_hint, where=where) for k, v in value.items()}
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        items = _split_list(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise KDCompressError(f"{where} must be {_type_name(hint)}, not {value!r}")
        return [coerce(item, item_hint, where=where) for item in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is not None:
            # Every command's numbers pass here: inf or nan (TOML and float() both accept them) would train or
            # measure without a word and publish NaN weights, so they are refused once, for every setting.
            if not math.isfinite(number):
                raise KDCompressError(f"{where} must be a finite number, not {value!r}")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
    elif hint is Any:
        return value
    raise KDCompressError(f"{where} must be {_type_name(hint)}, not {value!r}")


class Settings:
    """Mixin for a command's settings dataclass."""

    #: The TOML table these settings are read from, e.g. "export"; `command` names the CLI command for help.
    table: ClassVar[str] = ""
    command: ClassVar[str] = ""

    @classmethod
    def field_help(cls, name: str) -> str:
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        default = field.default if field.default is not _MISSING else field.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        suffix = "" if default is None or default == [] else f" (default: {shown})"
        return field.metadata.get("help", "") + suffix

    @classmethod
    def hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any], *, where: str | None = None) -> S:
        """Build and check the settings; unknown names and wrong types are one clear line."""
        where = where or f"[{cls.table}]"
        values = {key.replace("-", "_"): value for key, value in values.items()}
        hints = cls.hints()
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise KDCompressError(f"unknown {cls.table} setting(s) {', '.join(unknown)} in {where}; "
                                  f"see `kdcompress {cls.command or cls.table} --help` for the names")
        typed = {name: coerce(value, hints[name], where=f"{cls.table} setting {name} in {where}")
                 for name, value in values.items()}
        return cls(**typed).check()  # type: ignore[call-arg]

    def replace(self: S, **changes: Any) -> S:
        """A copy with `changes` applied, typed and checked like any other input."""
        return type(self).from_dict({**self.to_dict(), **changes}, where="the keyword arguments")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def check(self: S) -> S:
        """Cross-field and range rules; raise KDCompressError with the option name and the fix."""
        return self


def build(cls: type[S], config: S | None, overrides: dict[str, Any]) -> S:
    """What every API function does with `(config=None, **overrides)`: defaults < config < overrides."""
    base = config.to_dict() if config is not None else {}
    return cls.from_dict({**base, **overrides}, where="the keyword arguments" if overrides else None)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"config file {path} not found; check the --config path") from None
    except IsADirectoryError:
        raise KDCompressError(f"config file {path} is a directory; pass a .toml file to --config") from None
    except UnicodeDecodeError:
        raise KDCompressError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise KDCompressError(f"config file {path} is not valid TOML ({exc}); fix the line it names") from None


def table(document: dict[str, Any], name: str, path: str | Path, *, required: bool) -> dict[str, Any]:
    """The `[name]` table of a parsed TOML document, with option names as on the command line."""
    found = document.get(name)
    if found is None:
        if required:
            raise KDCompressError(f"config file {path} has no [{name}] table; add one with this command's settings")
        return {}
    if not isinstance(found, dict):
        raise KDCompressError(f"[{name}] in {path} must be a table of settings, not a single value")
    return {key.replace("-", "_"): value for key, value in found.items()}


def refuse_command_line_only(cls: type[Settings], values: dict[str, Any], path: str | Path | None) -> None:
    """Settings that a user must type on the command line (they run code or change safety) never come from a file."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.metadata.get("file", True) and f.name in values:
            raise KDCompressError(f"{f.name} cannot be set in a config file ({path} [{cls.table}]); it is a "
                                  f"command-line opt-in: pass --{f.name.replace('_', '-')} explicitly")


def merged(cls: type[S], config_file: str | Path | None, given: dict[str, Any]) -> S:
    """The CLI's rule: the file's `[cls.table]` table, overridden by the options given on the command line."""
    given = {k: v for k, v in given.items() if v is not None}
    from_file = table(read_toml(config_file), cls.table, config_file, required=True) if config_file else {}
    refuse_command_line_only(cls, from_file, config_file)
    source = f"{config_file} [{cls.table}] or the command line" if config_file else "the command line"
    return cls.from_dict({**from_file, **given}, where=source)


@dataclasses.dataclass
class StepTables:
    """The step tables of a command that runs the whole chain (experiment, compress): [distill], [export] and [bench]
    settings passed to every step of that kind, and the file they came from."""

    distill: dict[str, Any] = setting(factory=dict, help="[distill] settings shared by every student.", cli=False)
    export: dict[str, Any] = setting(factory=dict, help="[export] settings of every export.", cli=False)
    bench: dict[str, Any] = setting(factory=dict, help="[bench] settings (limit, batch_sizes, ...).", cli=False)
    config_path: str | None = setting(None, help="The file this came from, quoted in the report.", cli=False)
