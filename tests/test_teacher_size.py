"""Claim 3 across experiments: the same arms from two teachers, read side by side (experiment/teacher_size.py)."""

import json

import pytest
from safetensors.numpy import load_file

from kdcompress.errors import KDCompressError
from kdcompress.experiment.summary import assess_claims
from kdcompress.experiment.teacher_size import (load_compared, render_teacher_sizes, teacher_facts,
                                                teacher_size_claims)


def _row(group, target_by_seed, source=0.8, langs=("en", "de", "sw")):
    mean = sum(target_by_seed) / len(target_by_seed)
    return {"group": group, "form": "pytorch", "seeds": [1, 2, 3][:len(target_by_seed)], "source_lang": "en",
            "source": {"mean": source, "std": 0.0, "values": [source] * len(target_by_seed)},
            "target_average": {"mean": mean, "std": 0.01, "values": list(target_by_seed)},
            "per_language": {lang: {"mean": mean + (0.01 if lang == "sw" else 0.0)} for lang in langs}}


def _experiment(folder, layers, parameters, arm_scores, *, task="sib200", targets=("de", "sw")):
    summary = {"teacher/pytorch": _row("teacher", [0.8]),
               **{f"{arm}/pytorch": _row(arm, scores) for arm, scores in arm_scores.items()}}
    report = folder / "report"
    report.mkdir(parents=True)
    teacher = {"model": "t", "layers": layers, "hidden": 384, "parameters": parameters}
    (report / "experiment.json").write_text(json.dumps({
        "config": {"task": task}, "source_lang": "en", "target_langs": list(targets), "summary": summary,
        "teacher": teacher}))
    return {"teacher": teacher, "summary": summary}


def test_teacher_facts_count_the_parameters_without_loading_a_model(tiny_classifier_dir):
    facts = teacher_facts(tiny_classifier_dir)
    weights = load_file(str(tiny_classifier_dir / "model.safetensors"))
    assert facts["parameters"] == sum(t.size for t in weights.values())
    assert facts["layers"] == json.loads((tiny_classifier_dir / "config.json").read_text())["num_hidden_layers"]
    assert teacher_facts("org/hub-model")["parameters"] is None  # not a local folder: size unknown, no crash


def test_the_larger_teachers_student_is_compared_seed_by_seed(tmp_path):
    own = _experiment(tmp_path / "small", 6, 107e6, {"transfer": [0.70, 0.71, 0.72], "finetune": [0.5, 0.6, 0.4]})
    _experiment(tmp_path / "large", 12, 118e6, {"transfer": [0.75, 0.76, 0.70], "finetune": [0.6, 0.7, 0.5]})
    compared = load_compared([str(tmp_path / "large"), str(tmp_path / "small"), str(tmp_path / "later")],
                             own_out=tmp_path / "small", task="sib200", source="en", targets=["de", "sw"])
    assert [r["out"] for r in compared["reports"]] == [str(tmp_path / "large")]  # itself skipped
    assert compared["missing"] == [str(tmp_path / "later")]  # not run yet: stated, not an error
    claims = {c["claim"]: c for c in teacher_size_claims(own, compared)}
    transfer = claims["A larger teacher gives the strongest student (`transfer`: 12-layer teacher against "
                      "6-layer teacher)"]
    assert transfer["evidence"]["paired_diffs"] == pytest.approx([0.05, 0.05, -0.02])
    assert transfer["verdict"] == "inconclusive: the seeds disagree"
    finetune = claims["A larger teacher gives the strongest student (`finetune`: 12-layer teacher against "
                      "6-layer teacher)"]
    assert finetune["verdict"] == "supported" and finetune["evidence"]["ahead"] == "finetune, 12-layer teacher"
    # the claims replace the "not tested" line of a one-teacher experiment
    texts = [c["claim"] for c in assess_claims(own["summary"], teacher_size=list(claims.values()))]
    assert sum("larger teacher" in t for t in texts) == 2
    table = "\n".join(render_teacher_sizes(own, compared))
    assert "| 12-layer teacher | 118.0M |" in table and "| 6-layer teacher | 107.0M | this experiment |" in table
    assert "later: no report yet" in table


def test_a_teacher_of_the_same_size_tests_nothing(tmp_path):
    own = _experiment(tmp_path / "a", 6, 1e6, {"x": [0.5]})
    _experiment(tmp_path / "b", 6, 1e6, {"x": [0.6]})
    compared = load_compared([str(tmp_path / "b")], own_out=tmp_path / "a", task="sib200", source="en",
                             targets=["de", "sw"])
    (claim,) = teacher_size_claims(own, compared)
    assert not claim["testable"] and "same size" in claim["verdict"]


def test_experiments_of_another_task_or_before_teacher_facts_are_one_clear_line(tmp_path):
    _experiment(tmp_path / "xnli", 12, 1e8, {"x": [0.5]}, task="xnli")
    with pytest.raises(KDCompressError, match="compare experiments of the same task and languages"):
        load_compared([str(tmp_path / "xnli")], own_out=tmp_path / "own", task="sib200", source="en",
                      targets=["de", "sw"])
    old = tmp_path / "old" / "report"
    old.mkdir(parents=True)
    (old / "experiment.json").write_text(json.dumps({"config": {"task": "sib200"}, "summary": {}}))
    with pytest.raises(KDCompressError, match="bench report of .*old .compare_teachers. not found"):
        load_compared([str(tmp_path / "old")], own_out=tmp_path / "own", task="sib200", source="en",
                      targets=["de", "sw"])


def test_a_report_without_teacher_facts_reads_them_from_its_bench(tmp_path, tiny_classifier_dir):
    """Reports written before teacher facts were recorded name the teacher's folder in their bench.json."""
    report = tmp_path / "old" / "report"
    report.mkdir(parents=True)
    (tmp_path / "old" / "bench").mkdir()
    (tmp_path / "old" / "bench" / "bench.json").write_text(json.dumps(
        {"settings": {"models": {"teacher": str(tiny_classifier_dir)}}}))
    (report / "experiment.json").write_text(json.dumps({
        "config": {"task": "sib200"}, "source_lang": "en", "target_langs": ["de"], "summary": {}}))
    compared = load_compared([str(tmp_path / "old")], own_out=tmp_path / "own", task="sib200", source="en",
                             targets=["de"])
    assert compared["reports"][0]["teacher"] == teacher_facts(tiny_classifier_dir)


@pytest.mark.parametrize("spellings", [
    ["large"], ["large", "large"], ["large", "large/"], ["large", "./large", "small"],
])
def test_each_claim_line_is_printed_once_however_often_an_experiment_is_named(tmp_path, monkeypatch, spellings):
    from kdcompress.experiment.report import render_claims

    monkeypatch.chdir(tmp_path)
    own = _experiment(tmp_path / "small", 6, 107e6, {"transfer": [0.70, 0.71, 0.72], "finetune": [0.5, 0.6, 0.4]})
    _experiment(tmp_path / "large", 12, 118e6, {"transfer": [0.75, 0.76, 0.70], "finetune": [0.6, 0.7, 0.5]})
    compared = load_compared(spellings, own_out=tmp_path / "small", task="sib200", source="en",
                             targets=["de", "sw"])
    assert len(compared["reports"]) == 1
    claims = assess_claims(own["summary"], transfer_arms=("transfer",),
                           teacher_size=teacher_size_claims(own, compared))
    lines = [line for line in render_claims(claims) if line.startswith("- **")]
    assert len(lines) == len(set(lines)) == 5  # claims 1 and 2, claim 2 for the transfer arm, claim 3 per arm
    assert sum("(`finetune`: 12-layer teacher" in line for line in lines) == 1
