"""Output folders: checked before any work, locked while written, atomic, and cleaned after a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from kdcompress.errors import KDCompressError
from kdcompress.io import atomic_output_dir, check_writable_output, refuse_existing
from kdcompress.locks import clean_stale_temps, lock_path, output_lock, temp_prefix

SRC = str(Path(__file__).resolve().parents[1] / "src")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def write_lock(out: Path, pid: int, *, host: str | None = None, process_started: float | None = None) -> Path:
    lock = lock_path(out)
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01T00:00:00",
                                "process_started": process_started, "command": "kdcompress distill"}))
    return lock


def age(path: Path, seconds: float = 3600) -> Path:
    """Backdate a folder, as if an earlier (killed) run had made it."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- check_writable_output ---------------------------------------------------------------------

def _make(tmp: Path, layout: str) -> None:
    for entry in filter(None, layout.split()):
        path = tmp / entry.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text("x")


@pytest.mark.parametrize("layout,out,overwrite,error", [
    ("", "new/out", False, None),
    ("out/", "out", False, r"output directory .*out already exists; choose another --out or pass --overwrite"),
    ("out/", "out", True, None),
    ("out", "out", False, r"out is a file, not a directory; choose another --out"),
    ("out", "out", True, r"out is a file, not a directory; choose another --out"),
    ("parent", "parent/out", False, r"cannot create .*parent/out: .*parent is a file, not a directory"),
    ("parent", "parent/deeper/out", True, r"cannot create .*: .*parent is a file, not a directory"),
    ("", ".", True, r"is not a new folder's name"),
    ("", "..", False, r"is not a new folder's name"),
])
def test_check_writable_output(tmp_path, layout, out, overwrite, error):
    _make(tmp_path, layout)
    target = tmp_path / out if out not in (".", "..") else Path(out)
    if error is None:
        assert check_writable_output(target, overwrite) == target
        refuse_existing(target, overwrite=overwrite)
    else:
        for check in (lambda: check_writable_output(target, overwrite),
                      lambda: refuse_existing(target, overwrite=overwrite)):
            with pytest.raises(KDCompressError, match=error) as info:
                check()
            assert "\n" not in str(info.value)


def test_overwrite_never_deletes_the_working_directory_or_an_input(tmp_path, monkeypatch):
    (tmp_path / "runs" / "student").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runs" / "student")
    with pytest.raises(KDCompressError, match=r"--overwrite would delete .*runs, which holds the current directory"):
        check_writable_output(tmp_path / "runs", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KDCompressError, match=r"which holds the input .*student"):
        check_writable_output(tmp_path / "runs", True, inputs=[tmp_path / "runs" / "student"])
    check_writable_output(tmp_path / "runs", True, inputs=[tmp_path / "elsewhere"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_parent(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(KDCompressError, match=r"no permission to write in .*ro; choose another --out"):
            check_writable_output(locked / "out")
    finally:
        locked.chmod(0o700)


# --- output_lock -------------------------------------------------------------------------------

def test_lock_holds_pid_and_host_and_is_removed(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as held:
        assert held == out
        holder = json.loads(lock_path(out).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with output_lock(out):  # re-entrant within one process
            assert lock_path(out).exists()
        assert lock_path(out).exists()
    assert leftovers(tmp_path) == []


def _parent_started() -> float:
    return psutil.Process(os.getppid()).create_time()


@pytest.mark.parametrize("case,refused", [
    ("live other process", r"out is being written by process {ppid} \(started 2024-01-01T00:00:00\) "
                           r"`kdcompress distill`; wait for it to finish or stop it \(kill {ppid}\), then rerun"),
    ("live process on another host", r"out is being written by process {ppid} on elsewhere.example .*"
                                     r"if that process is gone delete .*out\.lock and rerun"),
    ("dead process", None),
    ("pid reused by another process", None),
    ("empty lock file", None),
    ("our own pid, not held", None),
])
def test_lock_refuses_live_holders_and_takes_over_stale_ones(tmp_path, capsys, case, refused):
    out = tmp_path / "out"
    ppid = os.getppid()
    if case == "live other process":
        lock = write_lock(out, ppid, process_started=_parent_started())
    elif case == "live process on another host":
        lock = write_lock(out, ppid, host="elsewhere.example")
    elif case == "dead process":
        lock = write_lock(out, dead_pid())
    elif case == "pid reused by another process":
        lock = write_lock(out, ppid, process_started=_parent_started() - 1000)
    elif case == "empty lock file":
        lock = lock_path(out)
        lock.write_text("")
    else:
        lock = write_lock(out, os.getpid())
    before = lock.read_text()
    if refused:
        with pytest.raises(KDCompressError, match=refused.format(ppid=ppid)) as info:
            with output_lock(out):
                pytest.fail("the block ran while another process held the lock")
        assert "\n" not in str(info.value)
        assert lock.read_text() == before  # the other run's lock is untouched
    else:
        with output_lock(out):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert "took over the lock" in capsys.readouterr().err
        assert not lock.exists()


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kdcompress.io import atomic_output_dir
    from kdcompress.locks import output_lock
    with {what}(Path(sys.argv[1])) as folder:
        if "{what}" == "atomic_output_dir":
            (folder / "half-written").write_text("x")
        print("locked", flush=True)
        time.sleep(60)
""")


def _hold(out: Path, what: str = "output_lock") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(what=what), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        pytest.fail(f"the lock-holding subprocess failed: {proc.stderr.read()[-2000:]}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_second_process_is_refused_while_the_first_writes(tmp_path, capsys):
    out = tmp_path / "out"
    proc = _hold(out)
    try:
        for attempt in (lambda: output_lock(out).__enter__(), lambda: atomic_output_dir(out).__enter__()):
            with pytest.raises(KDCompressError, match=rf"is being written by process {proc.pid} "):
                attempt()
        assert leftovers(tmp_path) == ["out.lock"]  # the refused runs made nothing
    finally:
        _kill(proc)
    # killed with -9: its lock is stale and the next run takes it over
    with atomic_output_dir(out) as folder:
        (folder / "done").write_text("ok")
    assert "took over the lock" in capsys.readouterr().err
    assert leftovers(tmp_path) == ["out"] and (out / "done").is_file()


def test_a_killed_atomic_output_leaves_nothing_after_the_next_run(tmp_path, capsys):
    out = tmp_path / "out"
    _kill(_hold(out, "atomic_output_dir"))
    left = leftovers(tmp_path)
    assert "out.lock" in left and any(name.startswith(".out.tmp-") for name in left)
    with atomic_output_dir(out) as folder:
        (folder / "done").write_text("ok")
    err = capsys.readouterr().err
    assert "took over the lock" in err and "removed 1 temporary folder(s)" in err
    assert leftovers(tmp_path) == ["out"] and leftovers(out) == ["done"]


def test_secondary_ranks_of_a_distributed_launch_do_not_lock(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("RANK", "1")
    with output_lock(out):
        assert not lock_path(out).exists()
    monkeypatch.setenv("RANK", "0")
    with output_lock(out):
        assert lock_path(out).exists()


def test_lock_removes_the_parent_folders_it_made_when_nothing_was_written(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "a" / "b" / "out"):
            raise RuntimeError("failed before any output")
    assert leftovers(tmp_path) == []


# --- clean_stale_temps -------------------------------------------------------------------------

@pytest.mark.parametrize("name,old,removed", [
    (".out.tmp-{dead}-abcd_123", False, True),      # pid-tagged, its process is gone
    (".out.work-{dead}-abcd1234", False, True),
    (".out.tmp-{me}-abcd1234", True, False),        # ours: never
    (".out.tmp-{ppid}-abcd1234", True, False),      # a live process's
    (".out.work-ab12cd34", True, True),             # untagged (TemporaryDirectory), older than this process
    (".out.work-ab12cd34", False, False),           # untagged, made since this process started: maybe ours
    (".other.tmp-{dead}-abcd1234", True, False),    # another output's
    ("out.tmp-{dead}-abcd1234", True, False),       # not hidden: not ours to delete
    (".out.tmp-{dead}", True, False),               # not a name we make
])
def test_clean_stale_temps(tmp_path, name, old, removed):
    path = tmp_path / name.format(dead=dead_pid(), me=os.getpid(), ppid=os.getppid())
    path.mkdir()
    (path / "weights.bin").write_bytes(b"0" * 10)
    if old:
        age(path)
    assert clean_stale_temps(tmp_path / "out") == ([path] if removed else [])
    assert path.exists() is not removed


def test_no_temps_are_removed_while_a_live_process_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    stale = age(Path(tempfile.mkdtemp(prefix=f".out.tmp-{dead_pid()}-", dir=tmp_path)))
    write_lock(out, os.getppid(), process_started=_parent_started())
    assert clean_stale_temps(out) == [] and stale.exists()
    lock_path(out).unlink()
    assert clean_stale_temps(out) == [stale]


def test_a_work_folder_this_process_just_made_survives_the_lock(tmp_path):
    """deploy/export.py makes TemporaryDirectory(prefix='.<out>.work-') before atomic_output_dir(out)."""
    out = tmp_path / "out"
    killed = age(Path(tempfile.mkdtemp(prefix=".out.work-", dir=tmp_path)))
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=tmp_path) as work, \
            atomic_output_dir(out) as staging:
        assert Path(work).is_dir() and not killed.exists()
        (staging / "model.onnx").write_text("x")
    assert leftovers(tmp_path) == ["out"]


def test_temp_prefix_is_recognised():
    assert temp_prefix(Path("runs/out"), "work") == f".out.work-{os.getpid()}-"
    with pytest.raises(ValueError):
        temp_prefix(Path("out"), "scratch")


# --- atomic_output_dir -------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["success", "failure", "overwrite", "overwrite failure", "new parents"])
def test_atomic_output_dir(tmp_path, case):
    out = tmp_path / ("a/b/out" if case == "new parents" else "out")
    if case.startswith("overwrite"):
        out.mkdir()
        (out / "old").write_text("old")
    fail = "failure" in case
    try:
        with atomic_output_dir(out, overwrite=case.startswith("overwrite")) as tmp:
            assert tmp.parent == out.parent and tmp.name.startswith(f".out.tmp-{os.getpid()}-")
            assert lock_path(out).exists()
            (tmp / "new").write_text("new")
            if fail:
                raise RuntimeError("the stage failed")
    except RuntimeError:
        assert fail
    expected = ["old"] if case == "overwrite failure" else [] if fail else ["new"]
    assert (leftovers(out) if out.exists() else []) == expected
    assert leftovers(out.parent) == (["out"] if expected else [])


def test_atomic_output_dir_refuses_a_file_before_the_block(tmp_path):
    (tmp_path / "out").write_text("a user's file")
    with pytest.raises(KDCompressError, match="is a file, not a directory"):
        with atomic_output_dir(tmp_path / "out", overwrite=True):
            pytest.fail("the block ran")
    assert (tmp_path / "out").read_text() == "a user's file" and leftovers(tmp_path) == ["out"]


def test_write_json_atomic_leaves_no_temporary_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    import os

    from kdcompress.io import write_json_atomic

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_export_names_the_disk_not_the_exporter(tiny_classifier_dir, data_dir, tmp_path,
                                                                    monkeypatch):
    import errno

    import torch
    from typer.testing import CliRunner

    from kdcompress.cli import app

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.onnx"))

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    out = tmp_path / "onnx"
    result = CliRunner().invoke(app, ["export-onnx", str(tiny_classifier_dir), "--out", str(out), "--task", "sib200",
                                      "--langs", "en", "--data-dir", str(data_dir), "--check-samples", "2"])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "torch.onnx could not export" not in lines[0] and "model.onnx" in lines[0]
    assert not out.exists()
