"""Config files: a TOML table per command holds what its command line holds, so runs can be repeated and shared."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from kdcompress.errors import KDCompressError


def load_config_file(path: str | Path, *, section: str) -> dict[str, Any]:
    """The `[section]` table of a TOML file, with option names as on the command line (dashes or underscores)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"config file {path} not found; check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise KDCompressError(f"config file {path} is not valid TOML ({exc}); fix the line it names") from None
    table = document.get(section)
    if table is None:
        raise KDCompressError(f"config file {path} has no [{section}] table; add one with this command's settings")
    return {key.replace("-", "_"): value for key, value in table.items()}
