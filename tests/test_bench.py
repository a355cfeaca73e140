"""The benchmark harness: statistics, accuracy, PyTorch/ONNX parity, the report files and error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kdcompress.bench import accuracy as acc
from kdcompress.bench.latency import REAL, Cell, make_cells, summarize, text_batches
from kdcompress.bench.config import BenchConfig
from kdcompress.bench.model_specs import parse_model_specs
from kdcompress.bench.run import BenchResult, _headline, pareto_front, run_bench
from kdcompress.bench.same_computation import alike, computation_key
from kdcompress.data.tasks import SIB_LABELS, XNLI_LABELS, Example, get_task
from kdcompress.errors import KDCompressError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = dict(batch_sizes=(1, 4), seq_lens=(16,), warmup=1, repeats=2, rounds=2, max_seconds_per_cell=0.2,
            threads=1, quiet=True)


# --- statistics and small pieces (no model, no data) -------------------------------------------

def test_percentiles_on_known_samples():
    seconds = np.arange(1, 101) / 1000  # 1 ms .. 100 ms
    stats = summarize(seconds, rows_per_call=4)
    # numpy's linear interpolation: position q/100 * (n-1) between sorted samples.
    assert stats["median_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["samples"] == 100
    assert stats["throughput_per_s"] == pytest.approx(400 / seconds.sum())


def test_throughput_counts_rows_over_total_time():
    stats = summarize([0.1, 0.3], rows_per_call=[2, 6])
    assert stats["throughput_per_s"] == pytest.approx(8 / 0.4)
    assert stats["median_ms"] == pytest.approx(200.0)


def test_grid_cells_and_real_length_batches():
    cells = make_cells((1, 8), (32, 128), real_lengths=True)
    assert [c.label for c in cells] == ["b1×L32", "b1×L128", "b8×L32", "b8×L128", "b1×real", "b8×real"]
    assert Cell(8, REAL).is_real and not Cell(8, 32).is_real
    pool = [(f"sentence {i}", None) for i in range(10)]
    batches = text_batches(pool, 4)
    assert [len(texts) for texts, _ in batches] == [4, 4]  # only full batches: every call has the same size
    assert batches == text_batches(pool, 4)  # the same for every model
    assert len(text_batches(pool[:2], 4)[0][0]) == 4  # a tiny pool is repeated to fill one batch


def test_pareto_front():
    points = {"teacher": (10.0, 0.80), "student": (2.0, 0.75), "int8": (1.0, 0.74), "bad": (3.0, 0.70),
              "tie": (2.0, 0.75)}
    assert pareto_front(points) == {"teacher", "student", "int8", "tie"}


def _shape(layers: int, parameters: int) -> dict:
    return {"format": "pytorch", "precision": "fp32", "quantization": "none", "model_type": "bert", "layers": layers,
            "hidden_size": 384, "parameters": parameters, "intra_op_threads": 2}


def test_models_of_one_computation_share_their_latency_on_the_pareto_front():
    """Three students of one shape (timed 10.3, 10.5, 10.6 ms by noise): only the most accurate of them is on the
    front, not the one noise made fastest; a smaller student and the teacher keep their own latency."""
    timings = {"teacher": 20.0, "none": 10.3, "transfer": 10.5, "pretrain": 10.6, "small": 6.0}
    scores = {name: {"target_average": a, "source": a}
              for name, a in {"teacher": 0.63, "none": 0.55, "transfer": 0.62, "pretrain": 0.58, "small": 0.50}.items()}
    latency = [{"model": name, "batch_size": 1, "seq_len": REAL, "speedup": 20.0 / ms, "end_to_end": {"median_ms": ms},
                "model_only": {"median_ms": ms, "p90_ms": ms, "p99_ms": ms, "mean_ms": ms,
                               "throughput_per_s": 1e3 / ms}}
               for name, ms in timings.items()]
    models = {"teacher": _shape(12, 117), "small": _shape(4, 90),
              **{name: _shape(6, 107) for name in ("none", "transfer", "pretrain")}}
    head = {"batch_size": 1, "seq_len": REAL}
    headline = _headline(latency, scores, head, models)
    assert {name for name, row in headline.items() if row["pareto"]} == {"teacher", "transfer", "small"}
    assert headline["none"]["median_ms"] == 10.3  # the reported latency stays each model's own
    unknown = _headline(latency, scores, head, {})  # shapes not recorded: each model on its own
    assert {name for name, row in unknown.items() if row["pareto"]} == {"teacher", "none", "transfer", "small"}


def test_exported_forms_of_one_shape_and_quantization_run_the_same_computation():
    """Exports record no parameter count: their feed-forward width stands in for it. Another quantization scheme
    or an unrecorded shape is a computation of its own."""
    int8 = {"format": "onnx", "runtime": "onnxruntime", "precision": "int8", "quantization": "int8",
            "quantization_scheme": "dynamic u8s8", "model_type": "bert", "layers": 6, "hidden_size": 384,
            "intermediate_size": 1536, "vocab_size": 250037, "intra_op_threads": 2}
    models = {"a-int8": int8, "b-int8": dict(int8), "a-static": {**int8, "quantization_scheme": "static QDQ"},
              "unrecorded": {**int8, "intermediate_size": None}}
    assert alike("a-int8", models, models) == ["a-int8", "b-int8"]
    assert alike("a-static", models, models) == ["a-static"] and alike("unrecorded", models, models) == ["unrecorded"]


def test_sample_examples_is_seeded_spread_and_parallel():
    english = [Example(f"en {i}", None, i // 10) for i in range(50)]  # sorted by label, like SIB-200
    german = [Example(f"de {i}", None, i // 10) for i in range(50)]
    sample = acc.sample_examples(english, 10)
    assert len(sample) == 10 and len({ex.label for ex in sample}) > 1  # a prefix would hold one class
    assert sample == acc.sample_examples(english, 10)
    assert [ex.text[3:] for ex in acc.sample_examples(german, 10)] == [ex.text[3:] for ex in sample]
    assert acc.sample_examples(english, None) == english


def test_parse_model_specs_and_int_lists():
    assert parse_model_specs(["teacher=runs/t", "runs/student/"]) == {"teacher": "runs/t", "student": "runs/student/"}
    with pytest.raises(KDCompressError, match="different NAME"):
        parse_model_specs(["a=x", "a=y"])
    with pytest.raises(KDCompressError, match="NAME=PATH"):
        parse_model_specs(["=x"])
    # The command line's comma-separated lists become whole numbers in BenchConfig.
    assert BenchConfig.from_dict({"batch_sizes": "1, 8,32"}).batch_sizes == [1, 8, 32]
    with pytest.raises(KDCompressError, match="seq_lens"):
        BenchConfig.from_dict({"seq_lens": "32,long"}, where="the command line")


# --- settings: a [bench] table or keyword arguments are checked before any work ------------------

@pytest.mark.parametrize("table, expected", [
    ({"limit": 12, "batch_size": [1]}, r"unknown bench setting\(s\) batch_size in \[bench\]; see `kdcompress bench --help`"),
    ({"measure_memory": False}, r"unknown bench setting\(s\) measure_memory"),
    ({"repeats": "many"}, r"bench setting repeats in \[bench\] must be a whole number, not 'many'"),
    ({"real_lengths": "yes"}, r"bench setting real_lengths .* must be true or false"),
    ({"batch_sizes": [1, "x"]}, r"bench setting batch_sizes .* must be a whole number, not 'x'"),
    ({"models": ["runs/a"]}, r"bench setting models .* must be a table of .*strings"),
    ({"device": "tpu"}, r"--device 'tpu' is not one of cpu, cuda"),
    ({"rounds": 0}, r"--rounds must be at least 1, got 0"),
    ({"max_seconds_per_cell": 0}, r"--max-seconds-per-cell must be positive"),
])
def test_bench_table_is_checked_in_one_line(table, expected):
    with pytest.raises(KDCompressError, match=expected) as caught:
        BenchConfig.from_dict(table)
    assert len(str(caught.value).splitlines()) == 1


def test_a_bench_table_round_trips_and_keywords_override_it():
    cfg = BenchConfig.from_dict({"limit": 12, "batch_sizes": [1, 8], "seq_lens": [128], "memory": False})
    assert (cfg.limit, cfg.batch_sizes, cfg.seq_lens, cfg.memory) == (12, [1, 8], [128], False)
    assert BenchConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(limit=4).limit == 4 and cfg.limit == 12


@pytest.mark.parametrize("seq_lens, expected", [
    ([0], "--seq-lens must be a list of positive whole numbers, got 0"),
    ("x", "bench setting seq_lens .* must be .*whole number.*'x'"),
    ([], "--seq-lens must be a list of positive whole numbers, got nothing"),
    ([1024], "--seq-lens values above 512"),
])
def test_bad_seq_lens_fail_before_any_work(seq_lens, expected, tmp_path, monkeypatch):
    import kdcompress.bench.run as run

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(run, "get_task", no_work)
    monkeypatch.setattr(run, "load_runner", no_work)
    with pytest.raises(KDCompressError, match=expected):
        run_bench(models={"m": str(tmp_path / "model")}, task="sib200", out=str(tmp_path / "r"), seq_lens=seq_lens,
                  quiet=True)
    with pytest.raises(KDCompressError, match=expected):
        BenchConfig.from_dict({"seq_lens": seq_lens})
    assert not (tmp_path / "r").exists()


class KeywordRunner:
    """A stand-in model: predicts the label named in the text; its label order differs from the task's."""

    labels = tuple(reversed(SIB_LABELS))

    def logits(self, texts, text_pairs=None):
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, self.labels.index(text.split(":")[0])] = 1.0
        return out


def test_accuracy_equals_a_hand_count():
    task = get_task("sib200")
    # text says what the model will predict; label is the truth. Hand count: 3 right of 5.
    examples = [Example("travel: a", None, task.label_index("travel")),
                Example("sports: b", None, task.label_index("sports")),
                Example("health: c", None, task.label_index("politics")),
                Example("geography: d", None, task.label_index("geography")),
                Example("travel: e", None, task.label_index("entertainment"))]
    runner = KeywordRunner()
    mapping = acc.label_mapping(runner.labels, task, model_name="keyword")
    result = acc.evaluate(runner, mapping, {"en": examples, "de": examples[:2]}, batch_size=2)
    assert result["en"] == {"accuracy": pytest.approx(3 / 5), "correct": 3, "n": 5}
    assert result["de"]["accuracy"] == 1.0
    summary = acc.summarize_languages(result, "en", ["de"])
    assert summary["source"] == pytest.approx(0.6) and summary["target_average"] == 1.0


def test_accuracy_does_not_depend_on_the_eval_batch_size():
    task = get_task("sib200")
    topics = ["travel", "sports", "health", "geography", "politics"]
    examples = [Example(f"{topics[i % 5]}: {'word ' * (i % 7)}", None, task.label_index(topics[(i * 3) % 5]))
                for i in range(23)]
    runner = KeywordRunner()
    mapping = acc.label_mapping(runner.labels, task, model_name="keyword")
    results = [acc.evaluate(runner, mapping, {"en": examples}, batch_size=size) for size in (1, 4, 256)]
    assert results[0] == results[1] == results[2] and results[0]["en"]["n"] == 23
    with pytest.raises(KDCompressError, match="--eval-batch-size 0: give a positive whole number"):
        BenchConfig.from_dict({"eval_batch_size": 0})


def test_label_mapping_rejects_a_different_label_set():
    expected = "model nli has labels that differ from task sib200 .missing science.*unexpected entailment"
    with pytest.raises(KDCompressError, match=expected):
        acc.label_mapping(XNLI_LABELS, get_task("sib200"), model_name="nli")


def test_deltas_to_baseline():
    def model(en, de, fr):
        per_lang = {"en": {"accuracy": en}, "de": {"accuracy": de}, "fr": {"accuracy": fr}}
        return acc.summarize_languages(per_lang, "en", ["de", "fr"])

    deltas = acc.deltas_to_baseline({"teacher": model(0.9, 0.8, 0.7), "student": model(0.85, 0.8, 0.6)}, "teacher")
    assert deltas["teacher"]["target_average"] == 0
    assert deltas["student"]["de"] == pytest.approx(0.0)
    assert deltas["student"]["fr"] == pytest.approx(-0.1)
    assert deltas["student"]["target_average"] == pytest.approx(-0.05)


def test_machine_facts_name_cpu_flags_and_libraries():
    from kdcompress.machine import cpu_summary, machine_facts

    facts = machine_facts()
    assert facts["cpu"]["physical_cores"] >= 1
    assert {"avx2", "avx512f", "avx512_vnni"} <= set(facts["cpu"]["flags"])
    assert {"torch", "onnxruntime", "transformers"} <= set(facts["libraries"])
    assert "physical cores" in cpu_summary(facts)


def test_bench_package_api_is_plain_and_lazy():
    import types

    import kdcompress.bench

    assert type(kdcompress.bench) is types.ModuleType and not callable(kdcompress.bench)
    assert kdcompress.bench.run_bench is run_bench and kdcompress.bench.BenchResult is BenchResult
    assert kdcompress.bench.BenchConfig is BenchConfig
    with pytest.raises(AttributeError, match="no attribute 'bench'"):
        kdcompress.bench.bench


# --- real models: a tiny SIB-200 classifier with mBERT's real tokenizer ------------------------------

def _tiny_sib_classifier(out: Path, vocab_dir: Path) -> Path:
    # Built here rather than with conftest.make_tiny_bert, whose tokenizer (BertTokenizerFast(vocab_file=...))
    # comes out with a 5-token vocabulary under transformers 5: every word would be [UNK] and the
    # ONNX-vs-PyTorch comparison would see one input. A large initializer spreads predictions over classes.
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(vocab_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=0.5,
                        num_labels=len(SIB_LABELS), id2label=dict(enumerate(SIB_LABELS)),
                        label2id={label: i for i, label in enumerate(SIB_LABELS)})
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _export_fp32_onnx(model_dir: Path, out: Path, data_dir: Path) -> Path:
    from kdcompress.deploy.export import export_onnx

    return Path(export_onnx(model_dir=str(model_dir), out=str(out), task="sib200", langs="en", data_dir=str(data_dir),
                            check_samples=4, progress=False).out)


@pytest.fixture(scope="module")
def sib_models(tmp_path_factory, mbert_vocab_dir, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_models")
    pytorch = _tiny_sib_classifier(root / "pytorch", mbert_vocab_dir)
    return {"pt": pytorch, "onnx": _export_fp32_onnx(pytorch, root / "onnx", data_dir)}


def test_onnx_and_pytorch_forms_give_the_same_accuracy(sib_models, data_dir):
    from kdcompress.bench.runners import load_runner

    task = get_task("sib200")
    examples = {lang: acc.sample_examples(task.load("test", lang, data_dir=data_dir), 40) for lang in ("en", "zh")}
    results, predictions = {}, {}
    for name, path in sib_models.items():
        runner = load_runner(path, "cpu", threads=1)
        assert runner.format == ("onnx" if name == "onnx" else "pytorch")
        mapping = acc.label_mapping(runner.labels, task, model_name=name)
        results[name] = acc.evaluate(runner, mapping, examples)
        texts = [ex.text for ex in examples["zh"]]
        predictions[name] = runner.logits(texts, [None] * len(texts))
    assert results["pt"] == results["onnx"]
    np.testing.assert_allclose(predictions["pt"], predictions["onnx"], atol=1e-4)
    assert len(set(predictions["pt"].argmax(-1))) > 1  # the comparison sees different outputs, not one constant


def test_bench_writes_a_well_formed_report(sib_models, data_dir, tmp_path):
    import psutil

    out = tmp_path / "report"
    # Ballast: the memory probes must report their own peak, not this (larger) parent's.
    ballast = np.ones(400 * 2**20 // 8)
    parent_rss_mb = psutil.Process().memory_info().rss / 2**20
    result = run_bench(models=dict(sib_models), task="sib200", source_lang="en", target_langs="de,fra_Latn",
                       data_dir=data_dir, out=out, limit=12, baseline="pt", **FAST)
    del ballast

    assert isinstance(result, BenchResult) and result.out == out
    assert sorted(p.name for p in out.iterdir()) == sorted(result.payload["files"])
    saved = json.loads((out / "bench.json").read_text())
    assert saved == json.loads(json.dumps(result.payload))
    assert saved["settings"]["models"] == {name: str(path) for name, path in sib_models.items()}
    assert saved["settings"]["target_langs"] == ["de", "fr"]
    assert saved["settings"]["threads"] == 1 and saved["settings"]["threads_source"] == "set by --threads"
    assert saved["machine"]["cpu"]["flags"] and saved["machine"]["libraries"]["onnxruntime"]
    assert saved["data"]["de"]["n"] == 12
    assert [e["cell"] for e in saved["latency"]][::2] == ["b1×L16", "b4×L16", "b1×real", "b4×real"]
    for name in ("pt", "onnx"):
        model = saved["models"][name]
        assert model["peak_rss_mb"] > model["model_rss_mb"] > 0 and model["load_seconds"] > 0
        assert model["peak_rss_mb"] < parent_rss_mb - 200
        assert model["size_mb"] > 1
        assert set(saved["accuracy"][name]["per_language"]) == {"en", "de", "fr"}
    assert saved["accuracy"]["onnx"]["per_language"] == saved["accuracy"]["pt"]["per_language"]
    assert saved["accuracy"]["onnx"]["delta_vs_baseline"]["target_average"] == 0
    assert saved["headline"]["pt"]["speedup"] == 1.0
    # the export records its shape as the PyTorch model does, and its own format: a computation of its own
    pt, onnx = saved["models"]["pt"], saved["models"]["onnx"]
    assert onnx["intermediate_size"] == pt["intermediate_size"] > 0 and onnx["layers"] == pt["layers"]
    assert None not in (computation_key(pt), computation_key(onnx)) and computation_key(pt) != computation_key(onnx)
    for entry in saved["latency"]:
        assert entry["model_only"]["samples"] >= 2 and entry["end_to_end"]["median_ms"] > 0
    markdown = (out / "bench.md").read_text()
    assert "| en (source) | 12 |" in markdown and "b1×real" in markdown and "AVX" in markdown
    for plot in ("latency_vs_accuracy.png", "accuracy_per_language.png"):
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC and (out / plot).stat().st_size > 10_000


def test_latency_models_times_a_subset_and_still_measures_every_accuracy(sib_models, data_dir, tmp_path):
    # A config (as a [bench] table gives) plus keyword overrides, the way the experiment calls it.
    config = BenchConfig.from_dict(dict(FAST, batch_sizes=[2], real_lengths=False, memory=False))
    result = run_bench(config, models=dict(sib_models), task="sib200", target_langs="de", data_dir=data_dir,
                       out=tmp_path / "r", limit=6, latency_models=["onnx"], baseline="onnx")
    payload = result.payload
    assert set(payload["headline"]) == {"onnx"} and {e["model"] for e in payload["latency"]} == {"onnx"}
    assert set(payload["accuracy"]) == {"pt", "onnx"}
    assert payload["settings"]["headline"]["label"] == "b2×L16"
    assert payload["settings"]["measure_memory"] is False
    assert "| pt | pytorch |" in (tmp_path / "r" / "bench.md").read_text()
    with pytest.raises(KDCompressError, match="include the baseline 'pt'"):
        run_bench(config, models=dict(sib_models), task="sib200", target_langs="de", data_dir=data_dir,
                  out=tmp_path / "r2", latency_models=["onnx"], baseline="pt")


# --- the command line ----------------------------------------------------------------------------

def _cli(*args: str):
    from typer.testing import CliRunner

    from kdcompress.cli import app

    # a wide console: at 80 columns (as under pytest-xdist) rich shortens the table's headers to "t…"
    return CliRunner().invoke(app, ["bench", *args], env={"COLUMNS": "200"})


def test_cli_prints_the_table(sib_models, data_dir, tmp_path):
    result = _cli("--model", f"pt={sib_models['pt']}", "--model", f"onnx={sib_models['onnx']}", "--task", "sib200",
                  "--target-langs", "de", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"), "--limit", "8",
                  "--batch-sizes", "2", "--seq-lens", "16", "--no-real-lengths", "--threads", "1", "--warmup", "0",
                  "--repeats", "2", "--rounds", "1", "--no-memory", "--baseline", "onnx")
    assert result.exit_code == 0, result.output
    assert "target %" in result.output and "b2×L16" in result.output, result.output
    assert json.loads((tmp_path / "r" / "bench.json").read_text())["settings"]["baseline"] == "onnx"


@pytest.fixture(scope="module")
def nli_model(tmp_path_factory, mbert_vocab_dir) -> Path:
    from conftest import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("nli"), mbert_vocab_dir, layers=1, labels=XNLI_LABELS)


@pytest.mark.parametrize("case, expected", [
    ("missing model", "model broken: model path .*does-not-exist does not exist"),
    ("not a model", "model broken: .* is neither a model directory"),
    ("unknown language", "task sib200 has no language 'xx'"),
    ("label mismatch", "model nli has labels that differ from task sib200"),
    ("unknown baseline", "baseline 'nobody' is not one of the models"),
    ("existing output", "already exists"),
    ("sequence too long", "--seq-lens 512 exceed model pt's maximum of 128 tokens"),
])
def test_bad_input_is_one_clear_line(case, expected, sib_models, nli_model, data_dir, tmp_path):
    models = {"pt": str(sib_models["pt"])}
    extra: list[str] = []
    if case == "missing model":
        models["broken"] = str(tmp_path / "does-not-exist")
    elif case == "not a model":
        (tmp_path / "empty").mkdir()
        models["broken"] = str(tmp_path / "empty")
    elif case == "unknown language":
        extra = ["--target-langs", "de,xx"]
    elif case == "label mismatch":
        models["nli"] = str(nli_model)
    elif case == "unknown baseline":
        extra = ["--baseline", "nobody"]
    elif case == "existing output":
        (tmp_path / "r").mkdir()
    elif case == "sequence too long":
        extra = ["--seq-lens", "512"]
    args = [arg for name, path in models.items() for arg in ("--model", f"{name}={path}")]
    result = _cli(*args, "--task", "sib200", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"),
                  "--limit", "4", "--no-memory", "--threads", "1", *extra)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich may wrap the line in a narrow test terminal
    assert message.startswith("error:") and len(result.output.strip().splitlines()) <= 3
    assert re.search(expected, message), message
    assert not (tmp_path / "r").exists() or case == "existing output"


def test_cuda_without_a_gpu_says_so(sib_models, data_dir, tmp_path):
    import onnxruntime
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA device is present; this checks the message on machines without one")
    for name in ("pt", "onnx"):
        result = _cli("--model", f"{name}={sib_models[name]}", "--task", "sib200", "--data-dir", str(data_dir),
                      "--out", str(tmp_path / name), "--limit", "4", "--device", "cuda", "--no-memory")
        assert result.exit_code == 2
        assert "--device cuda" in result.output and "use --device cpu" in " ".join(result.output.split())


# --- exported models through the predictor, on every runtime -------------------------------------

@pytest.fixture(scope="module")
def openvino_export(sib_models, tmp_path_factory, data_dir) -> Path:
    pytest.importorskip("openvino", reason="openvino is not installed: pip install 'kdcompress[openvino]'")
    from kdcompress.deploy.export import export_onnx

    out = tmp_path_factory.mktemp("bench_ov") / "ov"
    return Path(export_onnx(model_dir=str(sib_models["pt"]), out=str(out), runtime="openvino", task="sib200",
                            langs="en", data_dir=str(data_dir), check_samples=4, eval_samples=4,
                            progress=False).out)


def test_bench_runs_exported_models_on_every_runtime(sib_models, openvino_export, data_dir, tmp_path):
    models = {"pt": sib_models["pt"], "onnx": sib_models["onnx"], "ov": openvino_export}
    result = run_bench(models=models, task="sib200", target_langs="de", data_dir=data_dir, out=tmp_path / "r",
                       limit=40, baseline="pt", runtime="all", **dict(FAST, batch_sizes=(2,), real_lengths=False))
    payload = result.payload
    assert list(payload["models"]) == ["pt", "onnx@onnxruntime", "onnx@openvino", "ov"]
    info = payload["models"]
    assert [info[n]["runtime"] for n in list(info)[1:]] == ["onnxruntime", "openvino", "openvino"]
    assert info["onnx@onnxruntime"]["served_by"] == "kdcompress.runtime.Predictor"
    for name in ("onnx@onnxruntime", "onnx@openvino", "ov"):
        # the memory probe imported the predictor only, and timed process start -> first prediction
        assert info[name]["heavy_modules_loaded"] == [] and info[name]["probe_imports"].endswith("only")
        assert 0 < info[name]["cold_start_seconds"] < 60
        assert info[name]["peak_rss_mb"] < info["pt"]["peak_rss_mb"]  # no torch, no transformers
        throughput = info[name]["throughput"]
        assert throughput["rows"] == 80 and throughput["batch_size"] == 32
        assert throughput["bucketed_rows_per_s"] > 0 and throughput["arrival_rows_per_s"] > 0
        assert throughput["bucketed_vs_arrival"] == pytest.approx(
            throughput["bucketed_rows_per_s"] / throughput["arrival_rows_per_s"])
    assert "throughput" not in info["pt"]
    # the same model, the same answers, on both runtimes (fp32)
    assert payload["accuracy"]["onnx@openvino"]["per_language"] == payload["accuracy"]["onnx@onnxruntime"][
        "per_language"] == payload["accuracy"]["pt"]["per_language"]
    assert {e["model"] for e in payload["latency"]} == set(info)
    markdown = (tmp_path / "r" / "bench.md").read_text()
    assert "Serving exported models" in markdown and "| onnx@openvino | openvino |" in markdown


def test_bench_default_runtime_keeps_names_and_notes_what_openvino_cannot_run(sib_models, data_dir, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed: pip install 'kdcompress[openvino]'")
    from kdcompress.bench.model_specs import expand_runtimes

    plan = BenchConfig.from_dict({"models": {k: str(v) for k, v in sib_models.items()}, "runtime": "onnxruntime",
                                  "out": "x"})
    plan = plan.replace(baseline="pt", latency_models=["pt", "onnx"])
    same, specs, notes = expand_runtimes(plan)
    assert list(same.models) == ["pt", "onnx"] and notes == []
    assert specs["onnx"].runtime == "onnxruntime" and specs["pt"].runtime is None
    dynamic = tmp_path / "dynamic"
    dynamic.mkdir()
    for f in sib_models["onnx"].iterdir():
        (dynamic / f.name).write_bytes(f.read_bytes())
    (dynamic / "export.json").write_text(json.dumps({"precision": "int8", "quantization": {"mode": "dynamic"}}))
    mixed = plan.replace(models={"pt": str(sib_models["pt"]), "int8": str(dynamic)}, runtime="all",
                         latency_models=["pt", "int8"])
    expanded, specs, notes = expand_runtimes(mixed)
    # it runs on one runtime only, so it keeps its name (a model on several gets NAME@RUNTIME rows)
    assert list(expanded.models) == ["pt", "int8"] and expanded.latency_models == list(expanded.models)
    assert "int8 was not run on OpenVINO" in notes[0] and "MatMulInteger" in notes[0]
    assert specs["int8"].runtime == "onnxruntime" and specs["int8"].path == str(dynamic)


def test_bench_openvino_without_the_extra_is_one_line(sib_models, data_dir, tmp_path, monkeypatch):
    import sys

    from kdcompress.bench import run

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(run, "load_runner", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(KDCompressError, match=r"pip install 'kdcompress\[openvino\]'") as info:
        run_bench(models={"onnx": str(sib_models["onnx"])}, task="sib200", target_langs="de", data_dir=data_dir,
                  out=tmp_path / "r", runtime="openvino", **FAST)
    assert "\n" not in str(info.value) and not (tmp_path / "r").exists()
    with pytest.raises(KDCompressError, match="--runtime 'tensorrt'"):
        BenchConfig.from_dict({"runtime": "tensorrt"})


def test_the_accuracy_cache_reuses_only_what_matches(sib_models, data_dir, tmp_path, capfd):
    """A second bench reads every language back; other model bytes, another runner or other examples are measured."""
    import shutil

    from kdcompress.bench.accuracy_cache import AccuracyCache, measure_into_cache

    cache = tmp_path / "cache"
    config = BenchConfig.from_dict(dict(FAST, batch_sizes=[1], real_lengths=False, memory=False, throughput=False))
    common = dict(task="sib200", target_langs="de", data_dir=data_dir, limit=6, accuracy_cache=str(cache))
    first = run_bench(config, models=dict(sib_models), out=tmp_path / "r1", **common).payload
    assert not any(row.get("reused") for model in first["accuracy"].values() for row in model["per_language"].values())
    assert first["settings"]["accuracy_cache"] == str(cache)
    # each entry keeps the time its measurement took (experiment-status estimates from it what is left)
    entries = AccuracyCache(cache).entries()
    assert len(entries) == 2 * len(sib_models) and all(entry["seconds"] > 0 for entry in entries)

    # the same bytes in another folder (a copied model) hit; a changed weight file misses
    copied, changed = tmp_path / "copied", tmp_path / "changed"
    shutil.copytree(sib_models["pt"], copied)
    shutil.copytree(sib_models["pt"], changed)
    with (changed / "model.safetensors").open("r+b") as weights:
        weights.seek(-4, 2)
        weights.write(b"\x00\x00\x80\x3f")  # the last float of the last tensor becomes 1.0
    models = {"pt": str(sib_models["pt"]), "onnx": str(sib_models["onnx"]), "copied": str(copied),
              "changed": str(changed)}
    second = run_bench(config, models=models, out=tmp_path / "r2", **common).payload["accuracy"]
    for name in ("pt", "onnx", "copied"):
        assert all(row["reused"] for row in second[name]["per_language"].values())
        assert {lang: row["correct"] for lang, row in second[name]["per_language"].items()} == \
            {lang: row["correct"] for lang, row in first["accuracy"]["pt" if name == "copied" else name][
                "per_language"].items()}
    assert not any(row.get("reused") for row in second["changed"]["per_language"].values())

    # other examples (another limit) miss; so does sentence_hits where the stored entry has none
    third = run_bench(config, models={"pt": str(sib_models["pt"])}, out=tmp_path / "r3",
                      **{**common, "limit": 7}).payload["accuracy"]["pt"]["per_language"]
    assert not any(row.get("reused") for row in third.values()) and third["en"]["n"] == 7

    # what an experiment's step pool runs after each student: the bench then only reads it back
    fresh = tmp_path / "fresh-cache"
    settings = dict(model=str(sib_models["pt"]), cache=str(fresh), task="sib200", split="test", langs=["en", "de"],
                    limit=6, data_dir=str(data_dir), device="cpu", threads=1, max_length=None, sentence_hits=False,
                    eval_batch_size=32)
    capfd.readouterr()
    seconds, measured = measure_into_cache(**settings)
    assert seconds > 0 and measured == 2 and len(list(fresh.glob("*.json"))) == 2
    assert re.search(r"test accuracy .*12/12", capfd.readouterr().err)  # its progress, in a log too
    assert measure_into_cache(**settings)[1] == 0  # all read back
    read_back = run_bench(config, models={"pt": str(sib_models["pt"])}, out=tmp_path / "r4",
                          **{**common, "accuracy_cache": str(fresh)}).payload["accuracy"]["pt"]["per_language"]
    assert all(row["reused"] for row in read_back.values())
    assert read_back["de"]["correct"] == first["accuracy"]["pt"]["per_language"]["de"]["correct"]

    # a damaged entry is measured again, and rewritten
    damaged = sorted(fresh.glob("*.json"))[0]
    lang = json.loads(damaged.read_text())["lang"]
    damaged.write_text("{not json")
    again = run_bench(config, models={"pt": str(sib_models["pt"])}, out=tmp_path / "r5",
                      **{**common, "accuracy_cache": str(fresh)}).payload["accuracy"]["pt"]["per_language"]
    assert [code for code, row in again.items() if not row.get("reused")] == [lang]
    assert json.loads(damaged.read_text())["result"]["n"] == 6
