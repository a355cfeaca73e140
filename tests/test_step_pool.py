"""The experiment's step pool (experiment/step_pool.py): its workers end with the experiment process."""

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
    pool.call(linger, {{"pid_file": {pid_file!r}}})
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
