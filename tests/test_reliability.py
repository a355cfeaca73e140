"""Reliability, second round (issue 22): one table per defect class, new inputs of each kind.

Classes: non-finite numbers; data read wrongly without a word; a model that does not fit its files; operating-system
faults; outputs published by a failed run; results that are not what they claim; stale reuse. Every row either fails
with one line (exit 2, nothing left behind) or runs correctly. Models are tiny and every training run is a step or two.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_bad_input import (Work, assert_one_line_error, explain, invoke, models, small_data, snapshot,  # noqa: F401
                            work)

# --- 1. non-finite numbers: refused in the settings base, for every command and every source -------------------

NON_FINITE = {
    "distill-alpha-nan": lambda w: w.distill("--alpha", "nan"),
    "distill-pretrain-lr-minus-inf": lambda w: w.distill("--pretrain-lr", "-inf"),
    "distill-epochs-infinity": lambda w: w.distill("--epochs", "Infinity"),
    "finetune-teacher-teacher-lr-inf": lambda w: w.finetune_teacher("--teacher-lr", "inf"),
    "export-min-agreement-nan": lambda w: w.export("--min-agreement", "nan"),
    "bench-cell-seconds-inf": lambda w: w.bench(extra=["--max-seconds-per-cell", "inf"]),
    "distill-toml-weight-nan": lambda w: ["distill", "--config", w.toml("[distill]\nattention_weight = nan\n"),
                                          *w.distill()[1:]],
    "experiment-arm-temperature-inf": lambda w: w.experiment(tail="[experiment.arms.hot]\nstrategy = \"finetune\"\n"
                                                                  "temperature = inf\n"),
}


@pytest.mark.parametrize("name", NON_FINITE)
def test_non_finite_settings_are_refused(work: Work, name):
    work.tmp.mkdir()
    args = NON_FINITE[name](work)
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(args), "finite")
    assert snapshot(work.tmp) == before


@pytest.mark.parametrize("values, word", [([float("nan")], "loss"), ([1.0, float("-inf")], "loss")])
def test_a_non_finite_loss_stops_the_stage(values, word):
    from kdcompress.errors import KDCompressError
    from kdcompress.training.finite_guard import check_loss

    with pytest.raises(KDCompressError, match=f"{word} turned non-finite at step 3.*--resume continues from it"):
        for value in values:
            check_loss(value, stage="student fine-tuning", step=3, last_checkpoint=2)


def test_weights_that_overflow_stop_distill_and_publish_nothing(work: Work):
    """A finite but absurd learning rate overflows the weights: one line, no student, and the .partial keeps only
    finite checkpoints (or nothing), so the corrected run works."""
    work.tmp.mkdir()
    result = invoke(work.distill("--strategy", "none", "--lr", "1e38", "--max-steps", "3", "--save-every", "1"))
    message = assert_one_line_error(result, "non-finite")
    assert not work.out.exists()
    partial = work.tmp / "out.partial"
    if partial.exists():
        from safetensors.torch import load_file

        for weights in partial.rglob("*.safetensors"):
            assert all(bool(t.isfinite().all()) for t in load_file(str(weights)).values()), message


# --- 2. data read wrongly: one line is one row; corpus excludes and unreadable folders --------------------------

def _edit_sib_test(root: Path, edit) -> int:
    path = root / "sib200" / "eng_Latn" / "test.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = edit(lines[3])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1  # less the header


@pytest.mark.parametrize("edit, expect", [
    (lambda line: line.replace("\t", '\t"', 2).replace('\t"', "\t", 1), None),  # unclosed quote opens the text
    (lambda line: line[: line.rindex("\t") + 1] + '"' + line[line.rindex("\t") + 1:] + ' "x', None),
    (lambda line: line[: line.rindex("\t") + 1] + '"said ""hi"""', 'said "hi"'),  # pandas quoting, undone
])
def test_sib_rows_survive_stray_quotes(work: Work, edit, expect):
    from kdcompress.data.tasks import get_task

    work.tmp.mkdir()
    root = work.data_copy()
    rows = _edit_sib_test(root, edit)
    examples = get_task("sib200").load("test", "en", data_dir=root)
    assert len(examples) == rows
    if expect:
        assert examples[2].text == expect


@pytest.mark.parametrize("args, expect", [
    (["--exclude", "pawsx"], "--exclude 'pawsx' matches no source"),  # a family this folder does not hold
    (["--exclude", "sib200/test"], "--exclude 'sib200/test' matches no source"),
])
def test_corpus_exclude_that_matches_nothing(work: Work, args, expect):
    work.tmp.mkdir()
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(work.corpus(*args)), expect)
    assert snapshot(work.tmp) == before


def test_corpus_refuses_an_unreadable_data_folder(work: Work, monkeypatch):
    work.tmp.mkdir()
    root = work.data_copy()
    hidden = root / "sib200" / "deu_Latn"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != hidden and real_access(p, mode, **kw))
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(work.corpus(data=root)), "cannot read | deu_Latn")
    assert snapshot(work.tmp) == before


@pytest.mark.parametrize("test_text, corpus_text", [
    ("The cat sat on the mat.", "the cat sat on the mat"),
    ("«Er sagte: „Ja“»", '"Er sagte: "Ja""'),
    ("ＡＢＣ 123 test", "abc123 TEST!"),
    ("Hello , world .", "Hello, world."),
])
def test_decontamination_ignores_case_punctuation_and_quotes(test_text, corpus_text):
    from kdcompress.data.corpus_sources import match_key

    assert match_key(test_text) == match_key(corpus_text) != ""


# --- 3. a model that does not fit its files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_classifier_dir, data_dir) -> Path:
    out = tmp_path_factory.mktemp("exported") / "onnx"
    result = invoke(["export-onnx", tiny_classifier_dir, "--out", out, "--task", "sib200", "--langs", "en",
                     "--data-dir", data_dir, "--check-samples", "2"])
    assert result.exit_code == 0, explain(result)
    return out


def _with_config(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_bench_refuses_weights_of_another_model_type(work: Work):
    work.tmp.mkdir()
    other = _with_config(work.m.classifier, work.tmp / "clf-as-roberta", model_type="roberta",
                         architectures=["RobertaForSequenceClassification"])
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(work.bench(f"clf={other}")), "lack")
    assert snapshot(work.tmp) == before


@pytest.mark.parametrize("changes, expect", [
    ({"id2label": {str(i): f"label{i}" for i in range(9)}}, "9 labels"),
    ({"vocab_size": 1000}, "embedding"),
])
def test_predict_refuses_an_export_that_does_not_fit(work: Work, exported, changes, expect):
    work.tmp.mkdir()
    model = _with_config(exported, work.tmp / "model", **changes)
    (work.tmp / "in.txt").write_text("hello\n")
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(["predict", model, "-i", work.tmp / "in.txt", "-o", work.tmp / "p.jsonl"]), expect)
    assert snapshot(work.tmp) == before


# --- 4. operating-system faults: one line naming the file, exit 2, nothing half-written ---------------------------

OS_FAULTS = [
    ("corpus", "kdcompress.data.corpus_builder.build_corpus", errno.ENOSPC, "no space left"),
    ("predict", "kdcompress.runtime.predict.predict_file", errno.EACCES, "permission denied"),
    ("bench", "kdcompress.bench.run.run_bench", errno.EDQUOT, "quota"),
    ("export", "kdcompress.deploy.export.export_onnx", errno.EROFS, "read-only"),
]


@pytest.mark.parametrize("command, target, number, expect", OS_FAULTS, ids=[f[0] for f in OS_FAULTS])
def test_os_faults_are_one_line_naming_the_file(work: Work, monkeypatch, exported, command, target, number, expect):
    work.tmp.mkdir()
    module, name = target.rsplit(".", 1)
    victim = str(work.tmp / "victim.bin")

    def fault(*args, **kwargs):
        raise OSError(number, os.strerror(number), victim)

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, fault)
    (work.tmp / "in.txt").write_text("hello\n")
    args = {"corpus": lambda: work.corpus(), "bench": lambda: work.bench(), "export": lambda: work.export(),
            "predict": lambda: ["predict", exported, "-i", work.tmp / "in.txt", "-o", work.out]}[command]()
    assert_one_line_error(invoke(args), f"{victim} | {expect}")


def test_a_fault_wrapped_by_a_library_names_the_disk():
    from kdcompress.os_errors import find_os_fault, os_fault_message

    try:
        try:
            raise OSError(errno.EFBIG, "File too large", "model.onnx")
        except OSError as inner:
            raise RuntimeError("exporter failed") from inner
    except RuntimeError as outer:
        fault = find_os_fault(outer)
    assert fault is not None and "model.onnx: file too large" in os_fault_message(fault)
    assert find_os_fault(RuntimeError("Failed to write: No space left on device")).errno == errno.ENOSPC


def _run_cli(args: list, *, fsize: int | None = None, close_fd: int | None = None) -> subprocess.CompletedProcess:
    """The installed entry point in a child process; `fsize` caps the size of any file it writes (EFBIG, with
    SIGXFSZ ignored as a shell's `ulimit -f` user would see it); `close_fd` starts it with that stream closed."""
    def prepare():
        import resource
        import signal

        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if close_fd is not None:
            os.close(close_fd)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    stdin = subprocess.DEVNULL if close_fd != 0 else None
    stdout = subprocess.PIPE if close_fd != 1 else None
    return subprocess.run([sys.executable, "-m", "kdcompress", *map(str, args)], text=True, stdin=stdin,
                          stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=180, preexec_fn=prepare)


def _one_line(completed: subprocess.CompletedProcess, expect: str, code: int = 2) -> None:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == code, completed.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in completed.stderr, completed.stderr
    for needle in expect.split(" | "):
        assert needle.lower() in lines[0].lower(), lines[0]


def test_a_full_disk_in_corpus_is_one_line_and_leaves_nothing(work: Work):
    work.tmp.mkdir()
    completed = _run_cli(work.corpus("--max-per-lang", "400"), fsize=4096)
    _one_line(completed, "file too large")
    assert sorted(p.name for p in work.tmp.iterdir()) == []


@pytest.mark.parametrize("stream", ["stdin", "stdout"])
def test_predict_with_a_closed_stream(work: Work, exported, stream):
    work.tmp.mkdir()
    (work.tmp / "in.txt").write_text("hello\n")
    if stream == "stdin":
        completed = _run_cli(["predict", exported, "-i", "-", "-o", work.out], close_fd=0)
        expect = "stdin, which is closed"
    else:
        completed = _run_cli(["predict", exported, "-i", work.tmp / "in.txt", "-o", "-"], close_fd=1)
        expect = "stdout, which is closed"
    _one_line(completed, expect)
    assert sorted(p.name for p in work.tmp.iterdir()) == ["in.txt"]


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b"[1, 2]"])
def test_garbage_run_json_on_resume_is_one_line(work: Work, garbage):
    work.tmp.mkdir()
    partial = work.tmp / "out.partial"
    partial.mkdir()
    (partial / "run.json").write_bytes(garbage)
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(work.distill("--strategy", "none", "--resume")), "run.json")
    assert snapshot(work.tmp) == before


def test_a_wrapped_ctrl_c_exits_130(work: Work, monkeypatch):
    import kdcompress.data.corpus_builder as corpus_builder

    def import_interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization of a runtime library failed") from None

    work.tmp.mkdir()
    monkeypatch.setattr(corpus_builder, "build_corpus", import_interrupted)
    result = invoke(work.corpus())
    assert result.exit_code == 130 and "interrupted" in result.stderr and "Traceback" not in result.output


# --- 5 and 6. predict publishes nothing for a failed run; results that are what they claim -----------------------

@pytest.mark.parametrize("rows, expect", [
    ('{"text": "   "}\n', "empty"),
    ('{"text": "a", "id": Infinity}\n', "not valid JSON"),
    ('{"text": "a", "text_pair": ""}\n', "text_pair"),
    ("only\t\n", "empty text after the tab"),
])
def test_predict_without_a_usable_row_writes_nothing(work: Work, exported, rows, expect):
    work.tmp.mkdir()
    suffix = ".tsv" if "\t" in rows else ".jsonl"
    (work.tmp / f"in{suffix}").write_text(rows)
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(["predict", exported, "-i", work.tmp / f"in{suffix}", "-o", work.out]), expect)
    assert snapshot(work.tmp) == before


CLAIMS = {
    "experiment-repeated-seed": (lambda w: w.experiment(experiment="seeds = [7, 3, 7]"), "seeds repeat 7"),
    "experiment-repeated-strategy": (lambda w: w.experiment(experiment='strategies = ["none", "none"]'),
                                     "strategies repeat none"),
    "experiment-arm-strategy-list": (lambda w: w.experiment(tail='[experiment.arms.x]\nstrategy = ["finetune"]\n'),
                                     "strategy must be a string"),
    "distill-max-length-4": (lambda w: w.distill("--max-length", "4"), "--max-length must be at least 8"),
    "bench-max-length-4": (lambda w: w.bench(extra=["--max-length", "4"]), "--max-length must be at least 8"),
    "predict-max-length-4": (lambda w: ["predict", w.m.onnx, "-i", w.file, "-o", w.out, "--max-length", "4"],
                             "--max-length must be at least 8"),
}


@pytest.mark.parametrize("name", CLAIMS)
def test_results_that_would_not_be_what_they_claim(work: Work, name):
    work.tmp.mkdir()
    build, expect = CLAIMS[name]
    args = build(work)
    before = snapshot(work.tmp)
    assert_one_line_error(invoke(args), expect)
    assert snapshot(work.tmp) == before


# --- 7. stale reuse ---------------------------------------------------------------------------------------------

def test_reuse_rule(tmp_path):
    from kdcompress.errors import KDCompressError
    from kdcompress.reuse import place_step, record_settings, refuse_changed, settings_hash

    target = tmp_path / "step"
    first = {"lr": 1e-4, "langs": ("en", "de")}
    assert place_step(target, first) == place_step(target, first) and not place_step(target, first).reuse
    target.mkdir()
    record_settings(target, first)
    assert place_step(target, {"lr": 1e-4, "langs": ["en", "de"]}).reuse  # tuples equal lists
    moved = place_step(target, {"lr": 2e-4, "langs": ["en", "de"]})
    assert moved.folder.name == f"step-{settings_hash({'lr': 2e-4, 'langs': ['en', 'de']})}"
    assert moved.changed == ("lr",) and not moved.reuse
    moved.folder.mkdir()
    record_settings(moved.folder, {"lr": 2e-4, "langs": ["en", "de"]})
    assert place_step(target, {"lr": 2e-4, "langs": ["en", "de"]}).reuse
    unrecorded = tmp_path / "old"
    unrecorded.mkdir()
    assert place_step(unrecorded, first).moved
    assert place_step(unrecorded, first, legacy=lambda folder: first).reuse  # adopted from its own files
    with pytest.raises(KDCompressError, match=r"other settings \(lr\)"):
        refuse_changed(target, {**first, "lr": 3.0}, what="bench report", fix="pass --overwrite")


def test_experiment_rerun_with_a_changed_setting_trains_again(work: Work):
    """A changed distill setting never reports the old student: the student is trained again into a hashed folder,
    and the benchmark is measured again for it."""
    work.tmp.mkdir()
    first = invoke(work.experiment())
    assert first.exit_code == 0, explain(first)
    again = invoke(work.experiment())
    assert again.exit_code == 0 and "made with these settings: reused" in again.stderr, explain(again)
    changed = invoke(work.experiment(distill="max_steps = 2"))
    assert changed.exit_code == 0, explain(changed)
    students = sorted(p.name for p in (work.out / "students").iterdir())
    assert "none-s1" in students and any(name.startswith("none-s1-") for name in students), students
    bench = json.loads((sorted(work.out.glob("bench-*"))[-1] / "bench.json").read_text())
    assert any(path.endswith(tuple(n for n in students if n.startswith("none-s1-")))
               for path in bench["settings"]["models"].values())
