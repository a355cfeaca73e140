"""`kdcompress distill` end to end on tiny random teachers and real SIB-200 slices."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification
from typer.testing import CliRunner

from kdcompress import distill
from kdcompress.cli import app
from kdcompress.training import loop

QUICK = ["--task", "sib200", "--target-langs", "de,zh,de", "--student-layers", "2", "--max-steps", "2",
         "--batch-size", "4", "--corpus-max-sentences", "48", "--max-length", "32"]


def run_cli(*args):
    return CliRunner().invoke(app, ["distill", *map(str, args)])


@pytest.mark.parametrize("strategy", ["none", "finetune", "pretrain", "both"])
def test_every_strategy_runs_from_the_cli(tmp_path, tiny_teacher_dir, data_dir, strategy):
    out = tmp_path / "student"
    result = run_cli("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--strategy", strategy, "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and model.config.num_labels == 7
    record = json.loads((out / "distill.json").read_text())
    expected_stages = {"none": ["student"], "finetune": ["teacher", "student"], "pretrain": ["pretrain_kd", "student"],
                       "both": ["pretrain_kd", "teacher", "student"]}[strategy]
    assert [s["name"] for s in record["stages"]] == expected_stages
    assert all(s["steps"] == 2 and len(s["history"]) == 2 for s in record["stages"])
    assert record["config"]["strategy"] == strategy and record["data"]["train"]["examples"] == 701
    assert (out / "teacher").is_dir() == (strategy in ("finetune", "both"))
    assert not (tmp_path / "student.partial").exists()
    dev = record["dev_accuracy"]
    assert set(dev["targets"]) == {"de", "zh"} and 0.0 <= dev["source"] <= 1.0
    assert dev["per_language"]["de"]["n"] == 99


def test_one_process_trains_in_one_precision_then_another(tmp_path, tiny_teacher_dir, data_dir):
    """Accelerate keeps one state per process: a second run in another --mixed-precision (the API called twice, an
    experiment's worker whose arms differ) failed with "AcceleratorState has already been initialized"."""
    from accelerate.state import AcceleratorState

    for run, precision in enumerate(("no", "bf16", "no")):
        out = tmp_path / f"student-{run}"
        result = run_cli("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--strategy", "none", "--out", out,
                         "--mixed-precision", precision, *QUICK)
        assert result.exit_code == 0, result.output
        assert AcceleratorState().mixed_precision == precision  # the run trained in the precision it was asked for
        assert json.loads((out / "distill.json").read_text())["config"]["mixed_precision"] == precision


def test_trimmed_narrow_student_loads_with_its_tokenizer(tmp_path, tiny_teacher_dir, data_dir):
    from transformers import AutoTokenizer

    out = tmp_path / "s"
    result = run_cli("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--strategy", "pretrain", "--trim-vocab",
                     "--student-hidden", "16", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    # trimmed: the corpus's tokens and every one-character token, a fifth of mBERT's 119,547
    assert model.config.hidden_size == 16 and model.config.vocab_size == len(tokenizer) < 119547 // 4
    logits = model(**tokenizer(["Die Katze schläft.", "猫在睡觉"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 7)


def test_a_trim_corpus_adds_its_tokens_to_the_trimmed_vocabulary(tmp_path, tiny_teacher_dir, data_dir):
    from transformers import AutoTokenizer

    from kdcompress.data.tasks import get_task

    common = ("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--strategy", "finetune", "--trim-vocab",
              "--no-trim-vocab-characters", *QUICK)
    sample = run_cli(*common, "--out", tmp_path / "sample")
    served = run_cli(*common, "--trim-vocab-corpus", "task:train", "--out", tmp_path / "served")
    assert sample.exit_code == 0 and served.exit_code == 0, served.output
    task = get_task("sib200")
    train = [e.text for lang in ("en", "de", "zh") for e in task.load("train", lang, data_dir=data_dir)]
    teacher = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    kept = AutoTokenizer.from_pretrained(tmp_path / "served")
    # every train sentence of the languages served keeps the teacher's segmentation (not only the transfer set's)
    assert all(kept.tokenize(text) == teacher.tokenize(text) for text in train)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "sample")) < len(kept)


@pytest.mark.parametrize("freeze_embeddings", [False, True])
def test_resumed_run_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_teacher_dir, data_dir, monkeypatch,
                                                          freeze_embeddings):
    settings = dict(teacher=str(tiny_teacher_dir), task="sib200", data_dir=str(data_dir), target_langs=["de"],
                    strategy="pretrain", student_layers=2, max_steps=4, save_every=2, batch_size=4, max_length=32,
                    corpus_max_sentences=64, seed=7, freeze_embeddings=freeze_embeddings)
    uninterrupted = distill(out=str(tmp_path / "a"), **settings).out

    real_save = loop._Checkpoint.save

    saved_progress = []

    def save_then_die(self, modules, optimizer, scheduler, progress):
        real_save(self, modules, optimizer, scheduler, progress)
        saved_progress.append(progress)
        if progress["step"] == 2 and "pretrain_kd" in str(self.directory):
            raise KeyboardInterrupt  # the process is killed right after a checkpoint

    monkeypatch.setattr(loop._Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(out=str(tmp_path / "b"), **settings)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.partial").is_dir()
    saved = [load_file(path) for path in (tmp_path / "b.partial").rglob("latest/*.safetensors")]
    assert saved and all(("bert.embeddings.word_embeddings.weight" in state) != freeze_embeddings for state in saved)
    monkeypatch.setattr(loop._Checkpoint, "save", real_save)
    resumed = distill(out=str(tmp_path / "b"), resume=True, **settings).out

    a, b = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    losses_a = [h["loss"] for s in json.loads((uninterrupted / "distill.json").read_text())["stages"] for h in s["history"]]
    losses_b = [h["loss"] for s in json.loads((resumed / "distill.json").read_text())["stages"] for h in s["history"]]
    assert losses_a == pytest.approx(losses_b, abs=1e-5)
    # the training time of the killed invocation, as its checkpoint kept it, is counted in the resumed run's record
    assert saved_progress[-1]["total_steps"] == 4 and saved_progress[-1]["seconds"] > 0
    record_a = json.loads((uninterrupted / "distill.json").read_text())
    record_b = json.loads((resumed / "distill.json").read_text())
    assert record_a["earlier_invocations_seconds"] == 0
    assert record_b["earlier_invocations_seconds"] == pytest.approx(saved_progress[-1]["seconds"], abs=0.01)
    pretrain_stage = record_b["stages"][0]
    assert pretrain_stage["name"] == "pretrain_kd" and pretrain_stage["earlier_seconds"] > 0
    assert "earlier_seconds" not in record_b["stages"][1]  # the student stage ran in one go


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_teacher_dir, data_dir, monkeypatch):
    settings = dict(teacher=str(tiny_teacher_dir), task="sib200", data_dir=str(data_dir), strategy="none",
                    student_layers=2, max_steps=3, save_every=1, batch_size=4, max_length=32, out=str(tmp_path / "c"))
    real_save = loop._Checkpoint.save

    def save_then_die(self, *args):
        real_save(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(**settings)
    monkeypatch.setattr(loop._Checkpoint, "save", real_save)
    weights = next((tmp_path / "c.partial").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    args = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    result = CliRunner().invoke(app, ["distill", *args, "--resume"])
    assert result.exit_code == 2
    assert "corrupt" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def bare_encoder_dir(tmp_path_factory, tiny_teacher_dir):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("bare")
    AutoModel.from_pretrained(tiny_teacher_dir).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(out)
    return out


def test_teacher_without_mlm_head(tmp_path, bare_encoder_dir, data_dir):
    # Without an MLM head, pretraining KD falls back to hidden-state and attention losses...
    out = tmp_path / "ok"
    result = run_cli("--teacher", bare_encoder_dir, "--data-dir", data_dir, "--strategy", "pretrain", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "distill.json").read_text())["stages"][0]["history"][0]) >= {"hidden", "attention"}
    # ...and asking for the MLM loss explicitly is a clear error.
    result = run_cli("--teacher", bare_encoder_dir, "--data-dir", data_dir, "--strategy", "pretrain",
                     "--mlm-weight", "1", "--out", tmp_path / "bad", *QUICK)
    assert result.exit_code == 2 and "no masked-LM head" in result.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args,message", [
    (["--task", "glue"], "unknown task 'glue'"),
    (["--target-langs", "xx"], "no language 'xx'"),
    (["--data-dir", "/nonexistent/data"], "does not exist"),
    (["--strategy", "magic"], "unknown strategy"),
    (["--student-layers", "9"], "deeper than its 4-layer teacher"),
    (["--teacher", "/nonexistent/teacher"], "teacher directory /nonexistent/teacher does not exist"),
])
def test_bad_input_is_one_clear_line(tmp_path, tiny_teacher_dir, data_dir, args, message):
    base = {"--teacher": tiny_teacher_dir, "--data-dir": data_dir, "--task": "sib200", "--out": tmp_path / "x"}
    base.update(dict(zip(args[::2], args[1::2])))
    result = run_cli(*[item for pair in base.items() for item in pair])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_classifier_teacher_with_other_labels_is_refused(tmp_path, mbert_vocab_dir, data_dir):
    from conftest import make_tiny_bert

    teacher = make_tiny_bert(tmp_path / "nli", mbert_vocab_dir, labels=("entailment", "neutral", "contradiction"))
    result = run_cli("--teacher", teacher, "--data-dir", data_dir, "--task", "sib200", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "pass a general teacher or one fine-tuned on this task" in result.output


def test_existing_output_is_never_overwritten(tmp_path, tiny_teacher_dir, data_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = run_cli("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--out", out, *QUICK)
    assert result.exit_code == 2 and "already exists" in result.output
    assert (out / "keep.txt").read_text() == "user data"


def test_config_file_holds_the_command_line(tmp_path, tiny_teacher_dir, data_dir):
    config = tmp_path / "run.toml"
    config.write_text(f"""[distill]
teacher = "{tiny_teacher_dir}"
data-dir = "{data_dir}"
strategy = "none"
student_layers = 2
max_steps = 1
batch_size = 4
out = "{tmp_path / 'from_file'}"
""")
    result = CliRunner().invoke(app, ["distill", "--config", str(config), "--seed", "3"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "from_file" / "distill.json").read_text())
    assert record["config"]["seed"] == 3 and record["config"]["strategy"] == "none"


def test_shared_finetuned_teacher(tmp_path, tiny_teacher_dir, data_dir):
    teacher = tmp_path / "teacher-ft"
    result = CliRunner().invoke(app, ["finetune-teacher", "--teacher", str(tiny_teacher_dir), "--data-dir", str(data_dir),
                                      "--max-steps", "2", "--batch-size", "4", "--out", str(teacher)])
    assert result.exit_code == 0, result.output
    assert AutoModelForSequenceClassification.from_pretrained(teacher).config.num_labels == 7
    out = tmp_path / "student"
    result = run_cli("--teacher", tiny_teacher_dir, "--finetuned-teacher", teacher, "--data-dir", data_dir,
                     "--strategy", "finetune", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "distill.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["student"] and record["finetuned_teacher"] == str(teacher)
    assert not (out / "teacher").exists()
    # A general model is no fine-tuned teacher.
    result = run_cli("--teacher", tiny_teacher_dir, "--finetuned-teacher", tiny_teacher_dir, "--data-dir", data_dir,
                     "--strategy", "finetune", "--out", tmp_path / "bad", *QUICK)
    assert result.exit_code == 2 and "is not a sequence classifier" in result.output


def test_all_target_languages(tmp_path, tiny_teacher_dir, data_dir):
    out = tmp_path / "all"
    result = run_cli("--teacher", tiny_teacher_dir, "--data-dir", data_dir, "--strategy", "none", "--out", out,
                     *QUICK, "--target-langs", "all", "--eval-limit", "4")
    assert result.exit_code == 0, result.output
    targets = json.loads((out / "distill.json").read_text())["task"]["target_langs"]
    assert len(targets) == 31 and "en" not in targets
