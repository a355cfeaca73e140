"""The experiment report's compute table: wall time per step from each step's distill.json."""

import json

import pytest

from kdcompress.experiment.compute import render_costs, step_costs


def _record(folder, **record):
    folder.mkdir(parents=True)
    (folder / "distill.json").write_text(json.dumps(record))
    return str(folder)


def test_step_costs_read_every_seed_and_the_machine(tmp_path):
    arm = [_record(tmp_path / "a-s1", wall_seconds=60, device="CPU, 2 physical cores"),
           _record(tmp_path / "a-s2", wall_seconds=180, device="CPU, 2 physical cores", config={"resume": True})]
    # resumed twice: the time earlier invocations kept is added; one record predates it, one checkpoint did
    resumed = [_record(tmp_path / "b-s1", wall_seconds=60, earlier_invocations_seconds=120, config={"resume": True}),
               _record(tmp_path / "b-s2", wall_seconds=60, earlier_invocations_seconds=None, config={"resume": True}),
               _record(tmp_path / "b-s3", wall_seconds=60, earlier_invocations_seconds=0)]
    carried = _record(tmp_path / "general", wall_seconds=120, device="cpu?", made_on={"device": "NVIDIA H100"})
    old = _record(tmp_path / "old", wall_seconds=30, versions={"torch": "2.13.0+cpu"})
    rows = {r["step"]: r for r in step_costs({"a": arm, "b": resumed, "general": [carried], "old": [old],
                                              "imported teacher": [str(tmp_path / "none")]})}
    assert set(rows) == {"a", "b", "general", "old"}  # a folder without a record is no step of ours
    assert (rows["b"]["min"], rows["b"]["max"], rows["b"]["last_invocation_only"]) == (1.0, 3.0, 1)
    assert rows["a"]["last_invocation_only"] == 1  # a resumed record from before the earlier time was kept
    assert rows["a"]["minutes"] == pytest.approx(2.0) and (rows["a"]["min"], rows["a"]["max"]) == (1.0, 3.0)
    assert rows["a"]["resumed"] == 1 and rows["a"]["runs"] == 2
    assert rows["general"]["machine"] == "NVIDIA H100"  # where it was made, not where it was unpacked
    assert rows["old"]["machine"] == "CPU"  # a CPU-only torch build trains on the CPU
    table = "\n".join(render_costs(list(rows.values()), 2))
    assert "| a | 2 | 2.0 (1.0-3.0) | CPU, 2 physical cores | 1 (1 last invocation only) |" in table
    assert "| b | 3 | 1.7 (1.0-3.0) | unrecorded | 2 (1 last invocation only) |" in table and "2 CPU cores" in table


def test_training_losses_read_the_first_seed_and_mark_the_uniform_guess(tmp_path):
    import math

    from kdcompress.experiment.loss_curves import plot_losses, render_losses, training_losses

    flat = [{"step": i, "loss": 1.1, "lr": 1e-4} for i in range(1, 21)]
    falling = [{"step": i, "loss": 2.0 - 0.05 * i} for i in range(1, 21)]
    first = _record(tmp_path / "arm-s1", stages=[{"name": "pretrain_kd", "steps": 20, "history": falling},
                                                 {"name": "student", "steps": 20, "history": flat}])
    (tmp_path / "arm-s1" / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"}}))
    second = _record(tmp_path / "arm-s2", stages=[{"name": "student", "steps": 20, "history": falling}])
    rows = training_losses({"arm": [first, second], "imported teacher": [str(tmp_path / "none")]})
    assert [(r["step"], r["stage"]) for r in rows] == [("arm", "pretrain_kd"), ("arm", "student")]  # first seed only
    pretrain, student = rows
    # the first and last tenth of 20 steps: steps 1-2 and 19-20
    assert pretrain["start"] == pytest.approx(2.0 - 0.05 * 1.5) and pretrain["end"] == pytest.approx(2.0 - 0.05 * 19.5)
    assert pretrain["uniform_guess"] is None  # pretraining KD is no classification loss
    assert student["uniform_guess"] == pytest.approx(math.log(3)) and student["end"] == pytest.approx(1.1)
    table = "\n".join(render_losses(rows))
    assert "| arm | student | 20 | 1.100 | 1.100 | +0% | 1.099 |" in table
    plot_losses(tmp_path / "loss.png", rows)
    assert (tmp_path / "loss.png").stat().st_size > 0
