"""Faults with real processes: `kill -9` in the middle of distill, experiment and corpus, then a rerun; and two runs
on one output at once.

Every command runs as `python -m kdcompress ...` in its own process, which the test kills with SIGKILL (nothing
in the process runs: no `finally`, no atexit), so what is left on disk is exactly what a power cut or an OOM kill
leaves. Subprocesses run single-threaded (OMP_NUM_THREADS=1): the runs compared for identical weights then do
the same float operations in the same order, and two of them share 2 cores without oversubscribing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from kdcompress.cli import app

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
TIMEOUT = 240  # seconds any one process may take (they take 5-30 s on 2 idle cores)


class Proc:
    """A kdcompress command in its own process, its stdout and stderr in one log file."""

    def __init__(self, log: Path, *args, program: list[str] | None = None):
        self.log = log
        with open(log, "w") as handle:
            self.popen = subprocess.Popen([*(program or [sys.executable, "-m", "kdcompress"]), *map(str, args)],
                                          stdout=handle, stderr=subprocess.STDOUT, env=ENV)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.popen.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            pytest.fail(f"{self.log.name} still running after {TIMEOUT} s:\n{self.output[-3000:]}")

    def finish(self) -> str:
        """Wait for a successful exit; return the output."""
        assert self.wait() == 0, self.output[-5000:]
        return self.output

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.popen.poll() is not None:
                pytest.fail(f"{self.log.name} exited ({self.popen.returncode}) before {what}:\n{self.output[-5000:]}")
            if time.monotonic() > deadline:
                self.popen.kill()
                pytest.fail(f"no {what} after {TIMEOUT} s:\n{self.output[-3000:]}")
            time.sleep(0.01)

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(30)
        assert self.popen.returncode == -signal.SIGKILL


def checkpoint_step(work: Path, stage: str) -> int:
    """The step of the last checkpoint of a stage in a run folder (0 if none yet)."""
    try:
        return json.loads((work / "checkpoints" / stage / "latest" / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), f"{a} and {b} differ in {key}"


def histories(out: Path) -> list[list[dict]]:
    return [[{k: v for k, v in h.items()} for h in s["history"]]
            for s in json.loads((out / "distill.json").read_text())["stages"]]


def own_lines(output: str) -> list[str]:
    """The non-empty lines of an output, less the import-time chatter of third-party packages that name a file
    under site-packages (torchao, when installed beside transformers, reports its missing CUDA kernels)."""
    return [line for line in output.splitlines() if line.strip() and "site-packages" not in line]


def leftovers(folder: Path, *, keep: set[str]) -> list[str]:
    """Whatever lies in `folder` besides `keep`: `.partial` folders, locks, hidden temp folders, ..."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --- distill ---------------------------------------------------------------------------------------


def test_kill_9_in_each_stage_of_both_then_resume_gives_the_uninterrupted_weights(tmp_path, tiny_teacher_dir,
                                                                                 data_dir):
    """distill --strategy both killed mid-pretrain_kd, resumed and killed mid-teacher, resumed and killed
    mid-student, resumed to the end == one uninterrupted run: both models within 1e-6, every loss equal."""
    runs = tmp_path / "runs"
    runs.mkdir()
    args = ["distill", "--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--task", "sib200",
            "--target-langs", "de", "--strategy", "both", "--student-layers", "2", "--max-steps", "12",
            "--save-every", "1", "--batch-size", "4", "--max-length", "32", "--corpus-max-sentences", "48",
            "--seed", "3", "--no-evaluate", "--freeze-embeddings"]
    reference = Proc(tmp_path / "reference.log", *args, "--out", runs / "reference")  # meanwhile, on the other core
    out = runs / "killed"
    work, lock = runs / "killed.partial", runs / "killed.lock"

    proc = Proc(tmp_path / "run-0.log", *args, "--out", out)
    for n, stage in enumerate(["pretrain_kd", "teacher", "student"]):
        if n:
            proc = Proc(tmp_path / f"run-{n}.log", *args, "--out", out, "--resume")
        proc.wait_until(lambda: checkpoint_step(work, stage) >= 2, f"a step-2 checkpoint of {stage}")
        proc.kill9()
        # killed mid-stage: the stage has checkpoints but is not done, and the killed process's lock is left behind
        assert not (work / "stages" / stage / "stage.json").exists(), f"the kill landed after {stage} ended"
        assert not out.exists() and lock.is_file()
        if n:
            log = proc.output
            assert "took over the lock" in log and "resumed at step" in log, log[-3000:]
    last = Proc(tmp_path / "run-3.log", *args, "--out", out, "--resume")
    log = last.finish()
    assert "took over the lock" in log and "resumed at step" in log
    reference.finish()

    assert leftovers(runs, keep={"reference", "killed"}) == []  # no .partial, no lock, no temp folder
    assert_same_weights(runs / "reference", out)
    assert_same_weights(runs / "reference" / "teacher", out / "teacher")
    ref_hist, got_hist = histories(runs / "reference"), histories(out)
    assert [len(h) for h in got_hist] == [12, 12, 12]
    for ref_stage, got_stage in zip(ref_hist, got_hist):
        for ref_step, got_step in zip(ref_stage, got_stage):
            assert ref_step.keys() == got_step.keys()
            assert [ref_step[k] for k in ref_step] == pytest.approx([got_step[k] for k in got_step], abs=1e-5)


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path, tiny_teacher_dir, data_dir):
    """While a distill holds `<out>.lock`, a second distill and a `--resume` on the same --out exit 2 with one
    line naming the holder's pid; the first then finishes normally and leaves only its output."""
    out = tmp_path / "student"
    args = ["distill", "--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--task", "sib200",
            "--target-langs", "de", "--strategy", "none", "--student-layers", "2", "--max-steps", "6",
            "--save-every", "2", "--batch-size", "4", "--max-length", "32", "--no-evaluate", "--out", out]
    first = Proc(tmp_path / "first.log", *args)
    work, lock = tmp_path / "student.partial", tmp_path / "student.lock"
    first.wait_until(lambda: lock.is_file() and (work / "run.json").is_file(), "lock and run folder")
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run (alive, lock held) for as long as the others take
    try:
        second = Proc(tmp_path / "second.log", *args)
        resumer = Proc(tmp_path / "resume.log", *args, "--resume")
        codes = second.wait(), resumer.wait()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    for proc, code in zip((second, resumer), codes):
        lines = own_lines(proc.output)
        assert code == 2 and len(lines) == 1, proc.output
        assert f"{out} is being written by process {first.pid}" in lines[0] and "distill" in lines[0], lines[0]
        assert "Traceback" not in proc.output
    first.finish()
    assert leftovers(tmp_path, keep={"student", "first.log", "second.log", "resume.log"}) == []
    assert (out / "model.safetensors").is_file() and len(histories(out)[0]) == 6


def _stop_politely(proc: Proc, paused: list[int]) -> None:
    """SIGTERM to `proc` while the processes in `paused` are stopped (SIGSTOP), then let them go on: the stop
    request lands mid-stage however fast the steps are."""
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(2)  # the experiment passes the stop on to its workers meanwhile
    for pid in paused:
        os.kill(pid, signal.SIGCONT)


STOPPED_AT = re.compile(r"\[student fine-tuning\] stopped at step (\d+)/(\d+); its checkpoint is saved")


def test_sigterm_saves_a_checkpoint_at_the_step_it_stops_and_resume_gives_the_uninterrupted_weights(
        tmp_path, tiny_teacher_dir, data_dir):
    """SIGTERM (a scheduler's time limit, `kill`) mid-stage: distill finishes its optimizer step, saves a checkpoint
    there (not only at the last multiple of --save-every), releases its lock, says so in one line and exits 143;
    --resume then ends where an uninterrupted run ends."""
    args = ["distill", "--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--task", "sib200",
            "--target-langs", "de", "--strategy", "none", "--student-layers", "2", "--max-steps", "40",
            "--save-every", "3", "--batch-size", "4", "--max-length", "32", "--seed", "5", "--no-evaluate"]
    reference = Proc(tmp_path / "reference.log", *args, "--out", tmp_path / "reference")
    out, work = tmp_path / "stopped", tmp_path / "stopped.partial"
    proc = Proc(tmp_path / "stopped.log", *args, "--out", out)
    proc.wait_until(lambda: checkpoint_step(work, "student") >= 3, "a step-3 checkpoint")
    _stop_politely(proc, [proc.pid])
    assert proc.wait() == 128 + signal.SIGTERM, proc.output
    stopped = STOPPED_AT.search(proc.output)
    assert stopped and int(stopped[2]) == 40, proc.output[-3000:]
    step = int(stopped[1])
    assert step % 3 and checkpoint_step(work, "student") == step  # saved where it stopped
    assert own_lines(proc.output)[-1].startswith("stopped by SIGTERM: nothing half-written was published")
    assert "Traceback" not in proc.output
    assert not out.exists() and not (tmp_path / "stopped.lock").exists()  # the lock went with the process

    resumed = Proc(tmp_path / "resumed.log", *args, "--out", out, "--resume").finish()
    assert f"resumed at step {step}/40" in resumed
    reference.finish()
    assert_same_weights(tmp_path / "reference", out)
    ref_losses = [h["loss"] for h in histories(tmp_path / "reference")[0]]
    assert [h["loss"] for h in histories(out)[0]] == pytest.approx(ref_losses, abs=1e-5)


# --- experiment ------------------------------------------------------------------------------------

EXPERIMENT = """
[experiment]
out = "{out}"
teacher = "{teacher}"
task = "sib200"
data_dir = "{data_dir}"
target_langs = ["de"]
strategies = ["none"]
seeds = [1]
quantize = "none"

[distill]
student_layers = 2
max_steps = 8
save_every = 1
batch_size = 4
max_length = 32
eval_limit = 8
freeze_embeddings = true

[bench]
limit = 12
batch_sizes = [1]
seq_lens = [16]
repeats = 2
rounds = 1
warmup = 0
memory = false
"""

# What an experiment measures that is not a function of its weights and data: time.
TIMED = ("latency", "seconds", "created", "machine", "warnings", "config_path")


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in TIMED)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_kill_9_during_experiment_then_rerun_gives_the_same_report(tmp_path, tiny_teacher_dir, data_dir):
    """An experiment killed in the middle of a student's distill, run again, resumes that distill and reports the
    same numbers as an uninterrupted experiment: same teacher and student weights (1e-6), same accuracies, same
    claims. Only timings differ (latency, step and wall seconds), and `step_seconds` of the rerun lists only the
    steps the rerun did."""
    configs = {}
    for name in ("reference", "killed"):
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(EXPERIMENT.format(out=tmp_path / name, teacher=tiny_teacher_dir, data_dir=data_dir))
    reference = Proc(tmp_path / "reference.log", "experiment", "--config", configs["reference"])

    out = tmp_path / "killed"
    work = out / "students" / "none-s1.partial"
    proc = Proc(tmp_path / "killed-0.log", "experiment", "--config", configs["killed"])
    proc.wait_until(lambda: checkpoint_step(work, "student") >= 2, "a step-2 checkpoint of the student")
    proc.kill9()
    assert (out / "teachers" / "finetuned").is_dir() and not (out / "students" / "none-s1").exists()
    assert not (out / "report").exists()
    # `experiment-status` reads where the killed run stands, and writes nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in [out, *out.rglob("*")])
    status = CliRunner().invoke(app, ["experiment-status", "--config", str(configs["killed"])],
                                env={"COLUMNS": "250"})
    assert status.exit_code == 0, status.output
    assert sorted((p, p.stat().st_mtime_ns) for p in [out, *out.rglob("*")]) == before
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:5]]
            for line in status.output.splitlines() if line.startswith("│")}
    assert rows["fine-tune the teacher"] == ["done", "", "2/2"]  # measured right after it was trained
    state, progress, accuracy = rows["distill none-s1"]
    assert (state, accuracy) == ("partly done", "0/2")
    assert re.fullmatch(r"student: step \d+/8, ~\d+ min left at its pace so far", progress)
    assert int(progress.split(",")[0].split()[-1].split("/")[0]) >= 2
    assert rows["benchmark"][0] == "to run"
    log = Proc(tmp_path / "killed-1.log", "experiment", "--config", configs["killed"]).finish()
    assert "reused" in log and "resumed at step" in log and "took over the lock" in log
    reference.finish()
    status = CliRunner().invoke(app, ["experiment-status", "--config", str(configs["killed"])])
    assert "3 done: every step is done" in status.output, status.output

    ref, got = tmp_path / "reference", out
    assert sorted(p.name for p in (got / "students").iterdir()) == ["none-s1"]  # no .partial, no lock left
    for model in ("teachers/finetuned", "students/none-s1"):
        assert_same_weights(ref / model, got / model)
    ref_report = json.loads((ref / "report" / "experiment.json").read_text())
    got_report = json.loads((got / "report" / "experiment.json").read_text())
    assert _untimed(got_report["summary"]) == _untimed(ref_report["summary"])
    assert got_report["claims"] == ref_report["claims"]
    ref_bench = json.loads((ref / "bench" / "bench.json").read_text())
    got_bench = json.loads((got / "bench" / "bench.json").read_text())
    assert got_bench["accuracy"] == ref_bench["accuracy"]
    # the student killed mid-run is distilled and measured again; the teacher, made before the kill, is reused
    assert set(got_report["step_seconds"]) == {"distill none-s1", "accuracy none-s1", "benchmark"}


def test_sigterm_to_an_experiment_with_workers_stops_each_step_at_a_checkpoint(tmp_path, tiny_teacher_dir, data_dir):
    """SIGTERM to `experiment --workers 2`: it passes the stop on to its workers, whose students save a checkpoint
    at the step they stop (each line labelled with its step), and exits 143 once they have ended, leaving no lock
    and no worker behind; the rerun resumes from those checkpoints."""
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.format(out=tmp_path / "exp", teacher=tiny_teacher_dir, data_dir=data_dir)
                      .replace("max_steps = 8\nsave_every = 1", "max_steps = 40\nsave_every = 3")
                      .replace("quantize = \"none\"", "quantize = \"none\"\nworkers = 2"))
    work = tmp_path / "exp" / "students" / "none-s1.partial"
    proc = Proc(tmp_path / "stopped.log", "experiment", "--config", config)
    proc.wait_until(lambda: checkpoint_step(work, "student") >= 3, "a step-3 checkpoint of none-s1")
    workers = [child for child in psutil.Process(proc.pid).children()
               if "resource_tracker" not in " ".join(child.cmdline())]
    assert len(workers) == 2, [child.cmdline() for child in workers]
    _stop_politely(proc, [worker.pid for worker in workers])
    assert proc.wait() == 128 + signal.SIGTERM, proc.output[-5000:]
    stopped = re.search(r"\[distill none-s1\] " + STOPPED_AT.pattern, proc.output)
    assert stopped, proc.output[-5000:]
    step = int(stopped[1])
    assert step % 3 and checkpoint_step(work, "student") == step
    assert own_lines(proc.output)[-1].startswith("stopped by SIGTERM: nothing half-written was published")
    assert "Traceback" not in proc.output, proc.output[-5000:]
    psutil.wait_procs(workers, timeout=30)
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
    assert list((tmp_path / "exp").rglob("*.lock")) == []

    rerun = Proc(tmp_path / "rerun.log", "experiment", "--config", config).finish()
    assert f"[distill none-s1] [student fine-tuning] resumed at step {step}/40" in rerun


# --- corpus ----------------------------------------------------------------------------------------

# `kdcompress corpus`, slowed down after its first output file is written: the test kills it there, inside
# atomic_output_dir, with the lock held and the hidden temp folder half written (the worst moment to die).
SLOW_CORPUS = """
import sys, time
import kdcompress.data.corpus_builder as builder
real = builder._sha256
def slow(path):
    digest = real(path)
    time.sleep(600)
    return digest
builder._sha256 = slow
from kdcompress.cli import app
sys.argv[0] = "kdcompress"
app()
"""


def test_kill_9_during_corpus_leaves_no_output_and_the_rerun_cleans_up(tmp_path, data_dir):
    out = tmp_path / "corpus"
    args = ["corpus", "--data-dir", data_dir, "--langs", "sw", "--out", out]
    proc = Proc(tmp_path / "killed.log", *args, program=[sys.executable, "-c", SLOW_CORPUS])
    lock = tmp_path / "corpus.lock"
    proc.wait_until(lambda: lock.is_file() and any(tmp_path.glob(".corpus.tmp-*/sw.txt")), "a half-written corpus")
    proc.kill9()
    stale = list(tmp_path.glob(".corpus.tmp-*"))
    assert not out.exists() and len(stale) == 1 and lock.is_file()

    log = Proc(tmp_path / "rerun.log", *args).finish()
    assert f"took over the lock {lock} of process {proc.pid}" in log
    assert f"removed 1 temporary folder(s) left beside {out}" in log and stale[0].name in log
    assert leftovers(tmp_path, keep={"corpus", "killed.log", "rerun.log"}) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["languages"]["sw"]["kept"] == len((out / "sw.txt").read_text().splitlines()) > 0
