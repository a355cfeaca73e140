"""Advisory locks on outputs being written, and the clean-up of what a killed run left beside them.

`<out>.lock` holds the writer's process id, host and start time; a second writer is refused while the
holder lives, and a stale lock (dead process, reused pid, corrupt file) is taken over with a note.
Hidden temp folders beside `out` (`.<name>.tmp-<pid>-*`, `.<name>.work-<pid>-*`) are removed once no
live process owns them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from kdcompress.errors import KDCompressError, describe

LOCK_SUFFIX = ".lock"
TEMP_KINDS = ("tmp", "work")
_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth (a lock is re-entrant in-process)


def lock_path(out: str | os.PathLike) -> Path:
    """The advisory lock file of an output: `<out>.lock`, beside it."""
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def temp_prefix(out: str | os.PathLike, kind: str = "tmp") -> str:
    """The name prefix for a hidden temporary folder beside `out`, tagged with our pid: `.<name>.<kind>-<pid>-`.

    Folders named this way are removed by `clean_stale_temps` once their process is gone. Pass it as the
    `prefix` of tempfile.mkdtemp / TemporaryDirectory with dir=out.parent.
    """
    if kind not in TEMP_KINDS:
        raise ValueError(f"kind must be one of {TEMP_KINDS}, not {kind!r}")
    return f".{Path(out).name}.{kind}-{os.getpid()}-"


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def _secondary_rank() -> bool:
    """True in the non-main processes of a distributed launch (accelerate launch, torchrun): rank 0 locks for all."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            return value.strip() != "0"
    return False


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - no psutil, no such process, no access: unknown
        return None


def _pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether process `pid` runs on this host (and, given its start time, is the same process, not a reuse)."""
    if pid <= 0:
        return False
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a core dependency
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - float(started)) < 2.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def _lock_payload() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "process_started": _process_start(os.getpid()),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else ""}


def _read_lock(lock: Path) -> tuple[str | None, dict | None]:
    """(raw text, parsed holder) of a lock file; (None, None) if it is gone; (raw, None) if unreadable.

    A lock created an instant ago may still be empty (create and write are two steps), so an unreadable
    fresh lock is read again for up to a second before it is judged.
    """
    if lock.is_dir():
        raise KDCompressError(f"the lock file {lock} is a folder; remove it (or choose another --out) and rerun")
    deadline = time.monotonic() + 1.0
    while True:
        try:
            raw = lock.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None, None
        except OSError:
            raw = ""
        try:
            holder = json.loads(raw)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return raw, holder
        except json.JSONDecodeError:
            pass
        if time.monotonic() > deadline:
            return raw, None
        time.sleep(0.05)


def _holder_is_live(holder: dict | None) -> bool:
    """Whether the lock's holder is a live process other than this one (another host: assumed live)."""
    if holder is None:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    if holder["pid"] == os.getpid():
        return False  # ours but not held (e.g. a pid reused after a restart): stale
    return _pid_alive(holder["pid"], holder.get("process_started"))


def _refusal(out: Path, lock: Path, holder: dict) -> KDCompressError:
    pid, started, command = holder["pid"], holder.get("started", "?"), holder.get("command")
    what = f" `{command}`" if command else ""
    if holder.get("host") != socket.gethostname():
        return KDCompressError(f"{out} is being written by process {pid} on {holder.get('host')} "
                               f"(started {started}){what}; wait for it to finish, or if that process is gone "
                               f"delete {lock} and rerun")
    return KDCompressError(f"{out} is being written by process {pid} (started {started}){what}; "
                           f"wait for it to finish or stop it (kill {pid}), then rerun")


def _create_lock(lock: Path) -> str | None:
    """Create `lock` exclusively and write our payload; its text, or None if it already exists."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    raw = json.dumps(_lock_payload())
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(raw)
    return raw


def _take_over(lock: Path, judged_raw: str) -> bool:
    """Remove a stale lock, unless another process replaced it since we read it. True if removed (or gone)."""
    grave = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
    try:
        os.replace(lock, grave)
    except FileNotFoundError:
        return True
    try:
        if grave.read_text(encoding="utf-8", errors="replace") != judged_raw:  # a fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(grave, lock)
            return False
        return True
    finally:
        grave.unlink(missing_ok=True)


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; return the folders it created, deepest first."""
    made = []
    probe = folder
    while not probe.exists():
        made.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise KDCompressError(f"cannot create {folder}: part of that path is a file, not a directory; "
                              "choose another --out") from None
    except OSError as exc:
        raise KDCompressError(f"cannot create {folder} ({describe(exc)}); choose another --out") from None
    return made


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, *, clean: bool = True) -> Iterator[Path]:
    """Hold the advisory lock `<out>.lock` while `out` is being written; yield `out` as a Path.

    The lock file is created exclusively (O_CREAT|O_EXCL) and holds our pid, host, start time and command.
    If a live process holds it, raise a one-line KDCompressError; if its process is gone (killed), take it
    over with a note on stderr. Re-entrant within one process. On entry, hidden temp folders beside `out`
    left by interrupted runs are removed (`clean_stale_temps`); on exit the lock is removed, and so are
    any parent folders this call created that stay empty. In the non-main processes of a distributed
    launch ($RANK or $LOCAL_RANK not 0) it does nothing: the main process holds the lock for the run.
    """
    out = Path(out).expanduser()
    lock = lock_path(out)
    if _secondary_rank():
        yield out
        return
    key = Path(os.path.realpath(lock.parent)) / lock.name  # one key however the path is spelled
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield out
        finally:
            _HELD[key] -= 1
        return

    made = _make_parents(out.parent)
    mine = None
    try:
        for _ in range(5):
            try:
                mine = _create_lock(lock)
            except OSError as exc:
                raise KDCompressError(f"cannot create the lock file {lock} ({describe(exc)}); "
                                      "choose another --out") from None
            if mine is not None:
                break
            raw, holder = _read_lock(lock)
            if raw is None:
                continue  # released meanwhile: try again
            if _holder_is_live(holder):
                raise _refusal(out, lock, holder)
            if _take_over(lock, raw):
                who = (f"process {holder['pid']} (started {holder.get('started', '?')})" if holder
                       else "an unreadable lock file")
                _note(f"took over the lock {lock} of {who}, which is no longer running")
        if mine is None:
            raise KDCompressError(f"could not take the lock {lock}: other runs keep taking it; wait for them to finish")
        _HELD[key] = 1
        if clean:
            clean_stale_temps(out)
        yield out
    finally:
        if _HELD.get(key):
            del _HELD[key]
        if mine is not None:
            with contextlib.suppress(OSError):
                if lock.read_text(encoding="utf-8", errors="replace") == mine:
                    lock.unlink()
        for folder in made:  # deepest first; stops at the first that is not empty
            try:
                folder.rmdir()
            except OSError:
                break


def _temp_pattern(out: Path) -> re.Pattern[str]:
    # tempfile's names end in 8 characters from [a-z0-9_]; ours carry "<pid>-" before them (temp_prefix)
    return re.compile(rf"\.{re.escape(out.name)}\.(?:{'|'.join(TEMP_KINDS)})-(?:(\d+)-)?[a-z0-9_]{{8}}")


def clean_stale_temps(out: str | os.PathLike) -> list[Path]:
    """Remove hidden temp folders beside `out` that interrupted runs left (`.<name>.tmp-*`, `.<name>.work-*`).

    Nothing is removed while a live process (not this one) holds `<out>.lock`. A folder named with
    `temp_prefix` carries its pid and is removed once that process is gone; one without a pid (e.g.
    TemporaryDirectory(prefix=".<name>.work-")) is removed if it is older than this process, so a folder
    this process made a moment ago is never removed. Returns the removed paths (and notes them on stderr).
    """
    out = Path(out).expanduser()
    parent = out.parent
    if not out.name or not parent.is_dir():
        return []
    if _holder_is_live(_read_lock(lock_path(out))[1]):
        return []
    pattern = _temp_pattern(out)
    me = os.getpid()
    my_start = _process_start(me)
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for path in entries:
        match = pattern.fullmatch(path.name)
        if not match:
            continue
        if match.group(1) is not None:
            pid = int(match.group(1))
            if pid == me or _pid_alive(pid):
                continue
        else:
            try:
                mtime = path.lstat().st_mtime
            except OSError:
                continue
            if my_start is None or mtime >= my_start - 1.0:
                continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not path.exists():
            removed.append(path)
    if removed:
        _note(f"removed {len(removed)} temporary folder(s) left beside {out} by an interrupted run: "
              + ", ".join(p.name for p in removed))
    return removed


# --- atomic outputs ----------------------------------------------------------------------------


def refuse_if_locked(out: Path) -> None:
    """A live process writing `out` (its `<out>.lock`) is refused now, before any work, not at the end.

    Our own lock (a re-check under `output_lock`) and a stale one (taken over later) pass; so do the
    non-main processes of a distributed launch, whose main process holds the lock for them.
    """
    if _secondary_rank():
        return
    holder = live_holder(out)
    if holder is not None:
        raise _refusal(out, lock_path(out), holder)


def live_holder(out: str | os.PathLike) -> dict | None:
    """The live process writing `out` ({"pid", "started", "command", ...} from `<out>.lock`), else None."""
    lock = lock_path(Path(out).expanduser())
    if not (lock.exists() or lock.is_symlink()):
        return None
    _, holder = _read_lock(lock)
    return holder if _holder_is_live(holder) else None
