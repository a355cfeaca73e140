"""Output directories: checked before any work, locked while written, atomic, and cleaned after a kill.

A stage's output appears complete or not at all (`atomic_output_dir`); while it is written, `<out>.lock`
(`output_lock`) keeps a second run off it; hidden temp folders that a killed run left beside it are removed
by the next run (`clean_stale_temps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from kdcompress.errors import KDCompressError
from kdcompress.locks import output_lock, refuse_if_locked, temp_prefix


# --- where an output may go ------------------------------------------------------------------


def check_writable_output(out: str | os.PathLike, overwrite: bool = False, *,
                          inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse, in one line and before any work, an `out` that cannot or must not be written; return it as a Path.

    Refused: an existing `out` without `overwrite`; an `out` that is a regular file (even with `overwrite`:
    we replace our own output folders, never a user's file); an `out` under a regular file or in a folder we
    may not write; an `out` that is no folder name ("." or ".."); with `overwrite`, an `out` that holds the
    current directory or one of `inputs` (the folders the command reads), which overwriting would delete.
    """
    out = Path(out).expanduser()
    if out.name in ("", ".", ".."):
        raise KDCompressError(f"--out {out} is not a new folder's name; pass a path such as runs/student")
    if out.is_symlink() and not out.exists():
        raise KDCompressError(f"output {out} is a broken symbolic link; remove it or choose another --out")
    if out.exists():
        if not out.is_dir():
            raise KDCompressError(f"output {out} is a file, not a directory; choose another --out "
                                  "(--overwrite replaces only folders)")
        if not overwrite:
            raise KDCompressError(f"output directory {out} already exists; choose another --out or pass --overwrite")
        _refuse_deleting(out, inputs)
    ancestor = out.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise KDCompressError(f"cannot create {out}: {ancestor} is a broken symbolic link; choose another --out")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KDCompressError(f"cannot create {out}: {ancestor} is a file, not a directory; choose another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise KDCompressError(f"cannot create {out}: no permission to write in {ancestor}; choose another --out")
    refuse_if_locked(out)
    return out


def refuse_existing(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise unless `out` may be written: we never overwrite a user's files unasked (see check_writable_output)."""
    check_writable_output(out, overwrite)


def _refuse_deleting(out: Path, inputs: Iterable[str | os.PathLike]) -> None:
    target = out.resolve()
    for kind, path in [("the current directory", Path.cwd())] + [("the input", Path(p)) for p in inputs]:
        here = path.expanduser().resolve()
        if here == target or target in here.parents:
            raise KDCompressError(f"--overwrite would delete {out}, which holds {kind} {path}; choose another --out")


# --- advisory locks ----------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; rename it to `out` only if the block succeeds.

    The temporary directory sits beside `out` so the final rename stays on one filesystem
    (and is therefore atomic). On any exception it is removed, leaving nothing half-written.
    The whole block holds `output_lock(out)`, which also removes temp folders of killed runs.
    """
    out = check_writable_output(out, overwrite)
    with output_lock(out):
        check_writable_output(out, overwrite)  # again under the lock: a concurrent run may just have finished
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out, "tmp"), dir=out.parent))
        match_umask(tmp)  # mkdtemp makes 0700; the finished directory gets the user's usual mode
        try:
            yield tmp
            if out.exists():  # only reachable with overwrite=True: move the old one aside, then swap
                aside = Path(tempfile.mkdtemp(prefix=temp_prefix(out, "tmp"), dir=out.parent)) / "old"
                os.replace(out, aside)
                os.replace(tmp, out)
                shutil.rmtree(aside.parent, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def match_umask(path: str | os.PathLike, *, mode: int = 0o777) -> None:
    """Give `path` the mode the user's own tools would give it (`mode` less the umask), e.g. after mkdtemp's 0700
    (a directory) or mkstemp's 0600 (a file: pass mode=0o666)."""
    Path(path).chmod(mode & ~_umask())


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk must not leave a half-written temporary behind
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, *, what: str) -> Any:
    """Read a JSON file we wrote, turning a missing or corrupt file into a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"{what} not found at {path}; point to a directory kdcompress produced") from None
    except json.JSONDecodeError as exc:
        raise KDCompressError(f"{what} at {path} is corrupt ({exc.msg}); delete it and rerun the stage that made it") from None
    except UnicodeDecodeError:
        raise KDCompressError(f"{what} at {path} is corrupt (not UTF-8 text); delete it and rerun the stage that "
                              "made it") from None
