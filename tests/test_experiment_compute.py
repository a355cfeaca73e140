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
    carried = _record(tmp_path / "general", wall_seconds=120, device="cpu?", made_on={"device": "NVIDIA H100"})
    old = _record(tmp_path / "old", wall_seconds=30, versions={"torch": "2.13.0+cpu"})
    rows = {r["step"]: r for r in step_costs({"a": arm, "general": [carried], "old": [old],
                                              "imported teacher": [str(tmp_path / "none")]})}
    assert set(rows) == {"a", "general", "old"}  # a folder without a record is no step of ours
    assert rows["a"]["minutes"] == pytest.approx(2.0) and (rows["a"]["min"], rows["a"]["max"]) == (1.0, 3.0)
    assert rows["a"]["resumed"] == 1 and rows["a"]["runs"] == 2
    assert rows["general"]["machine"] == "NVIDIA H100"  # where it was made, not where it was unpacked
    assert rows["old"]["machine"] == "CPU"  # a CPU-only torch build trains on the CPU
    table = "\n".join(render_costs(list(rows.values()), 2))
    assert "| a | 2 | 2.0 (1.0-3.0) | CPU, 2 physical cores | 1 |" in table and "2 CPU cores" in table
