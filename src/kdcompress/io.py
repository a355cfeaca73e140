"""Atomic output directories: a stage's output appears complete or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from kdcompress.errors import KDCompressError


def refuse_existing(out: Path, *, overwrite: bool = False) -> None:
    """Raise unless `out` may be written: we never overwrite a user's files unasked."""
    if out.exists() and not overwrite:
        raise KDCompressError(
            f"output directory {out} already exists; choose another --out or pass --overwrite"
        )


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; rename it to `out` only if the block succeeds.

    The temporary directory sits beside `out` so the final rename stays on one filesystem
    (and is therefore atomic). On any exception it is removed, leaving nothing half-written.
    """
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the finished directory gets the user's usual mode
    try:
        yield tmp
        if out.exists():  # only reachable with overwrite=True
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, *, what: str) -> Any:
    """Read a JSON file we wrote, turning a missing or corrupt file into a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"{what} not found at {path}; point to a directory kdcompress produced") from None
    except json.JSONDecodeError as exc:
        raise KDCompressError(f"{what} at {path} is corrupt ({exc.msg}); delete it and rerun the stage that made it") from None
