"""`kdcompress experiment-status`: each step's state read from the experiment folder, with nothing written.

A killed run's partly done student is checked in test_faults.py (kill -9 during an experiment); here: a fresh
experiment, a step another live process is running, a checkpoint, and a finished step whose settings changed."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from rich.console import Console
from typer.testing import CliRunner

from kdcompress.cli import app
from kdcompress.experiment import experiment_status
from kdcompress.experiment.config import ExperimentConfig
from kdcompress.experiment.run import placed_steps
from kdcompress.experiment.status import partial_progress, print_status
from kdcompress.reuse import record_settings
from test_experiment import ONE_STEP_TABLES

CONFIG = """
[experiment]
out = "{out}"
teacher = "{teacher}"
task = "sib200"
data_dir = "{data_dir}"
target_langs = ["de", "zh"]
strategies = ["none", "pretrain"]
seeds = [1, 2]
quantize = "none"
"""


def _write_config(path: Path, teacher, data_dir, distill: str = "") -> Path:
    """The experiment table and one-step tables, with `distill` lines added to [distill]."""
    tables = ONE_STEP_TABLES.replace("[distill]\n", f"[distill]\n{distill}\n")
    path.write_text(CONFIG.format(out=path.parent / "exp", teacher=teacher, data_dir=data_dir) + tables)
    return path


def _config(tmp_path: Path, teacher, data_dir, distill: str = "") -> ExperimentConfig:
    path = tmp_path / f"exp{len(list(tmp_path.glob('*.toml')))}.toml"
    return ExperimentConfig.from_file(_write_config(path, teacher, data_dir, distill))


def _states(rows) -> dict[str, tuple[str, str, str]]:
    return {row.name: (row.state, row.progress, row.accuracy) for row in rows}


def test_a_fresh_experiment_is_all_to_run_and_nothing_is_written(tmp_path, tiny_classifier_dir, data_dir):
    config = _write_config(tmp_path / "exp.toml", tiny_classifier_dir, data_dir)
    result = CliRunner().invoke(app, ["experiment-status", "--config", str(config)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "exp").exists()
    # the classifier teacher is used as it is: no import or fine-tuning step; one general student for both seeds
    names = [line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")]
    assert names == ["distill general student (pretrain)", "distill none-s1", "distill pretrain-s1",
                     "distill none-s2", "distill pretrain-s2", "benchmark"]  # seed by seed
    assert "6 to run: run the same `kdcompress experiment` command to continue" in result.output


def test_running_partly_done_done_and_changed_steps(tmp_path, tiny_classifier_dir, data_dir):
    students = tmp_path / "exp" / "students"
    students.mkdir(parents=True)
    # none-s1: finished with these settings (the record the run writes), two of its three languages measured
    cfg = _config(tmp_path, tiny_classifier_dir, data_dir)
    placed = placed_steps(cfg)[1]
    settings = {name: step_settings for name, _, step_settings in placed}
    (students / "none-s1").mkdir()
    record_settings(students / "none-s1", settings["distill none-s1"])
    cache = tmp_path / "exp" / "accuracy-cache"
    cache.mkdir()
    (students / "none-s1" / "distill.json").write_text(json.dumps({"wall_seconds": 540.0,
                                                                    "earlier_invocations_seconds": 60.0}))
    # 10 test examples in en and de, 20 in zh; none-s1 measured at 0.5 s an example, pretrain-s2 (zh) at 1 s
    for lang in ("en", "de"):
        (cache / f"{lang}.json").write_text(json.dumps({"model_dir": str(students / "none-s1"), "lang": lang,
                                                        "result": {"n": 10}, "seconds": 5.0}))
    (cache / "zh.json").write_text(json.dumps({"model_dir": str(students / "pretrain-s2"), "lang": "zh",
                                               "result": {"n": 20}, "seconds": 20.0}))
    (cache / "damaged.json").write_text("{")
    # none-s2: a checkpoint at step 3 of 7; the general student: being written by a live process
    checkpoint = students / "none-s2.partial" / "checkpoints" / "student" / "latest"
    checkpoint.mkdir(parents=True)
    (checkpoint / "progress.json").write_text(json.dumps({"step": 3, "total_steps": 7, "seconds": 360}))
    general = next(place.folder for name, place, _ in placed if name.startswith("distill general"))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        general.with_name(general.name + ".lock").write_text(json.dumps(
            {"pid": holder.pid, "host": socket.gethostname(), "started": "now",
             "process_started": psutil.Process(holder.pid).create_time()}))
        found = experiment_status(cfg)
    finally:
        holder.kill()
    console = Console(record=True, width=250)
    print_status(found, console, workers=2)
    printed = console.export_text()
    assert "1 done, 1 running, 1 partly done, 3 to run: a run is under way" in printed
    rows = _states(found)
    assert rows["distill none-s1"] == ("done", "", "2/3")
    # Time left, at the pace of what is done: none-s2 trains 4 more steps at 2 min a step (480 s), then 40 test
    # examples at none-s1's 0.5 s (20 s); none-s1 has zh left (10 s); pretrain-s1 has no finished step of its kind
    # (its training is not estimated), its 40 examples go at pretrain-s2's 1 s (40 s), and pretrain-s2's 20 (20 s)
    left = {row.name: (row.seconds_left, row.not_estimated) for row in found}
    assert left["distill none-s1"] == (10.0, ())
    assert left["distill none-s2"] == (500.0, ())
    assert left["distill pretrain-s1"] == (40.0, ("step",))
    assert left["distill pretrain-s2"] == (20.0, ("step",))
    assert left["benchmark"] == (0.0, ("step",))
    assert ("about 10 min of one worker's time left, at the pace of the steps done so far (about 5 min with 2 "
            "workers side by side); plus 4 steps with nothing of their kind done yet") in printed
    # 2 minutes a step so far, 4 steps to go
    assert rows["distill none-s2"] == ("partly done", "student: step 3/7, ~8 min left at its pace so far", "0/3")
    assert rows["distill general student (pretrain)"] == ("running", f"pid {holder.pid}", "")
    assert rows["benchmark"][0] == "to run"

    # Another learning rate: none-s1's folder was made with other settings, so the run would make it again
    rows = _states(experiment_status(_config(tmp_path, tiny_classifier_dir, data_dir, distill="lr = 0.001")))
    state, progress, _ = rows["distill none-s1"]
    assert state == "to run" and "other settings (lr)" in progress


def test_partial_progress_names_finished_stages_and_old_checkpoints(tmp_path):
    folder = tmp_path / "student"
    work = tmp_path / "student.partial"
    (work / "stages" / "pretrain_kd").mkdir(parents=True)
    (work / "checkpoints" / "student" / "latest").mkdir(parents=True)
    # a checkpoint written before the total was recorded says only its step
    (work / "checkpoints" / "student" / "latest" / "progress.json").write_text(json.dumps({"step": 50}))
    assert partial_progress(folder) == "pretrain_kd done; student: step 50"
    (work / "checkpoints" / "student" / "latest" / "progress.json").write_text("not json")
    assert partial_progress(folder) == "pretrain_kd done; student: unreadable checkpoint"
    assert partial_progress(tmp_path / "nothing") == ""


@pytest.mark.parametrize("override", [["--seeds", "1"], ["--strategies", "none"]])
def test_the_command_takes_the_experiment_overrides(tmp_path, tiny_classifier_dir, data_dir, override):
    config = _write_config(tmp_path / "exp.toml", tiny_classifier_dir, data_dir)
    result = CliRunner().invoke(app, ["experiment-status", "--config", str(config), *override],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    names = {line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")}
    assert ("distill none-s2" in names) == (override[0] != "--seeds")
    assert ("distill pretrain-s1" in names) == (override[0] != "--strategies")


def test_hub_reads_the_hubs_data_as_experiment_does(tmp_path, monkeypatch):
    """--hub reads the hub (mBERT, the hub's datasets), as for `experiment`: offline, that is one line naming it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "exp.toml"
    config.write_text(f'[experiment]\nout = "{tmp_path / "exp"}"\ntask = "sib200"\nseeds = [1]\nstrategies = ["none"]\n')
    result = CliRunner().invoke(app, ["experiment-status", "--config", str(config), "--hub"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: could not load") and "Hugging Face hub" in result.output
    assert not (tmp_path / "exp").exists()
