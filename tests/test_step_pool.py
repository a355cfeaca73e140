"""The experiment's step pool (experiment/step_pool.py): its workers end with the experiment process, and each line
they write names its step (experiment/worker_output.py)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

PARENT = textwrap.dedent("""
    import time
    from lingering import linger
    from kdcompress.experiment.step_pool import StepPool

    pool = StepPool(2)
    pool.call("linger", linger, {{"pid_file": {pid_file!r}}})
    time.sleep(300)
""")
LINGERING = textwrap.dedent("""
    import os, time

    def linger(pid_file):
        with open(pid_file + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(300)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with their parent through Linux's prctl")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_worker_ends_when_the_experiment_process_is_killed(tmp_path, how):
    (tmp_path / "lingering.py").write_text(LINGERING)
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(pid_file=str(pid_file))],
                              env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():
            assert parent.poll() is None, "the experiment process ended before its worker started"
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = psutil.Process(int(pid_file.read_text()))
        os.kill(parent.pid, how)  # no clean-up runs in the parent
        parent.wait(30)
        worker.wait(30)  # raises psutil.TimeoutExpired if the orphan lives on
    finally:
        parent.kill()
    assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE


TALKING_PARENT = textwrap.dedent("""
    from pathlib import Path
    from talking import talk
    from kdcompress.experiment.step_pool import StepPool

    with StepPool(2) as pool:
        first = pool.submit("distill a-s1", talk, {"word": "alpha"}, Path("unused-a"), resume=True)
        second = pool.call("accuracy b-s1", talk, {"word": "beta", "out": "unused-b", "resume": False})
        first.result(), second.result()
    print("parent after the pool")
""")
TALKING = textwrap.dedent("""
    import warnings
    from kdcompress.console import stderr_console
    from kdcompress.progress import Progress

    def talk(word, out, resume):
        stderr_console().print(f"{word} from a rich console, a long line " + "x" * 100)
        warnings.warn(f"{word} as a warning")
        with Progress(log_interval=0) as bar:
            task = bar.add_task(f"{word} training", total=2)
            bar.advance(task)
            bar.advance(task)
        print(f"{word} on stdout")
        print(f"{word} from print, unfinished", end="")
        return 1.0
""")


def test_each_line_a_worker_writes_names_its_step(tmp_path):
    """Two steps side by side in one log: every line of theirs (rich consoles, print, warnings, progress lines)
    begins with its step's name, and a long message stays one line (rich wrapped it at 80 columns in a log, each
    piece labelled); the step's first line says that it started (and whether it resumes)."""
    (tmp_path / "talking.py").write_text(TALKING)
    parent = subprocess.run([sys.executable, "-c", TALKING_PARENT], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}"
                                                                          f"{os.environ.get('PYTHONPATH', '')}"})
    assert parent.returncode == 0, parent.stderr
    lines = [line for line in (parent.stdout + parent.stderr).splitlines() if line.strip()]
    assert "parent after the pool" in lines  # the parent's own output is not labelled
    for word, label in (("alpha", "[distill a-s1] "), ("beta", "[accuracy b-s1] ")):
        own = [line for line in lines if word in line]
        assert len(own) >= 5 and all(line.startswith(label) for line in own), own
        started = [line for line in lines if line.startswith(label + "started")]
        assert started == [label + ("started (resuming its checkpoint)" if word == "alpha" else "started")]
        assert any(line.startswith(f"{label}{word} training: 2/2") for line in own), own
        assert any(line == f"{label}{word} from print, unfinished" for line in own), own  # ended at the step's end
        assert f"{label}{word} from a rich console, a long line " + "x" * 100 in own, own


STOPPING_PARENT = textwrap.dedent("""
    from stepping import step
    from kdcompress import stopping
    from kdcompress.experiment.step_pool import StepPool

    with stopping.stop_signals(), StepPool(2) as pool:
        futures = [pool.call(f"step {number}", step, {"number": number, "log": "steps.log"}) for number in range(5)]
        for future in futures:
            future.result()
""")
STEPPING = textwrap.dedent("""
    import time
    from kdcompress import stopping

    def step(number, log):
        with open(log, "a") as handle:
            handle.write(f"started {number}\\n")
        with stopping.at_safe_points("a step"):  # as the training loop: stop between steps
            while not stopping.requested():
                time.sleep(0.05)
        with open(log, "a") as handle:
            handle.write(f"stopped {number}\\n")
        stopping.check()

    def quick(number, log):
        with open(log, "a") as handle:
            handle.write(f"quick {number}\\n")
""")


def test_a_stopped_pool_starts_none_of_its_queued_steps(tmp_path):
    """SIGTERM to the parent while two steps run and three wait: the running two stop at their safe point, none of
    the others starts (the executor had already handed each worker its next call), and the parent ends."""
    (tmp_path / "stepping.py").write_text(STEPPING)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    parent = subprocess.Popen([sys.executable, "-c", STOPPING_PARENT], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": path})
    log = tmp_path / "steps.log"
    try:
        deadline = time.monotonic() + 120
        while not log.exists() or log.read_text().count("started") < 2:
            assert parent.poll() is None, parent.stderr.read()
            assert time.monotonic() < deadline, "the steps never started"
            time.sleep(0.05)
        os.kill(parent.pid, signal.SIGTERM)
        _, stderr = parent.communicate(timeout=60)  # raises subprocess.TimeoutExpired while a worker runs on
    finally:
        parent.kill()
    assert parent.returncode != 0 and "Stopped: SIGTERM" in stderr, stderr
    assert sorted(log.read_text().splitlines()) == ["started 0", "started 1", "stopped 0", "stopped 1"]


ONE_IDLE_PARENT = textwrap.dedent("""
    from stepping import quick, step
    from kdcompress import stopping
    from kdcompress.experiment.step_pool import StepPool

    with stopping.stop_signals(), StepPool(2) as pool:
        training = pool.call("step 0", step, {"number": 0, "log": "steps.log"})
        pool.call("quick 1", quick, {"number": 1, "log": "steps.log"}).result()
        training.result()
""")


def test_a_stopped_pool_ends_while_one_worker_waits_for_a_step(tmp_path):
    """SIGTERM to the parent while one worker trains and the other, its step done, waits: the training step stops at
    its safe point and the parent ends at the first request (the waiting worker died of the parent's SIGTERM while
    holding the executor's queue lock, and the parent waited for the other worker until a second SIGTERM)."""
    (tmp_path / "stepping.py").write_text(STEPPING)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    parent = subprocess.Popen([sys.executable, "-c", ONE_IDLE_PARENT], cwd=tmp_path, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": path})
    log = tmp_path / "steps.log"
    try:
        deadline = time.monotonic() + 120
        while not log.exists() or sorted(log.read_text().splitlines()) != ["quick 1", "started 0"]:
            assert parent.poll() is None, parent.stderr.read()
            assert time.monotonic() < deadline, "the steps never ran"
            time.sleep(0.05)
        time.sleep(0.5)  # the quick step's worker back to waiting for its next call
        workers = psutil.Process(parent.pid).children()
        assert len(workers) >= 2, workers  # both workers (and perhaps multiprocessing's resource tracker)
        os.kill(parent.pid, signal.SIGTERM)
        _, stderr = parent.communicate(timeout=60)  # raises subprocess.TimeoutExpired where the parent waits on
    finally:
        parent.kill()
    assert parent.returncode != 0 and "Stopped: SIGTERM" in stderr, stderr
    assert sorted(log.read_text().splitlines()) == ["quick 1", "started 0", "stopped 0"]
    psutil.wait_procs(workers, timeout=30)
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
