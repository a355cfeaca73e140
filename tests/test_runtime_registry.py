"""The runtime registry: a new runtime is one row plus one module, and export, bench and predict take it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from kdcompress.errors import KDCompressError
from kdcompress.runtime.backends import OrtBackend
from kdcompress.runtime.registry import (RUNTIMES, ModelSpec, Runtime, available_runtimes, get_runtime,
                                         register_runtime, runtime_of_dir, unregister_runtime)

STUB_FILE = "model.stub"


# --- the stub runtime's "module": a backend and an export step --------------------------------------

class StubBackend(OrtBackend):
    """Serves model.stub, an ONNX graph under another name, through ONNX Runtime."""

    name = "stubrt"


def stub_export_step(run, staging, parity, check, fp32_path, fp32_check) -> None:
    from kdcompress.deploy.export import check_report, write_outputs

    shutil.copyfile(fp32_path, staging / STUB_FILE)
    write_outputs(run, staging, staging / STUB_FILE, fp32_path, check_report(run, check, fp32_check, fp32_check))


STUB = Runtime(name="stubrt", title="Stub Runtime", model_kind="stub", package="onnxruntime",
               install="pip install stubrt", files=(STUB_FILE,), size_files=(STUB_FILE,), backend=StubBackend,
               export_step=stub_export_step)


@pytest.fixture()
def stub_runtime():
    register_runtime(STUB)
    yield STUB
    unregister_runtime(STUB.name)


# --- the table -----------------------------------------------------------------------------------

def test_rows_and_lookups():
    assert list(RUNTIMES)[:3] == ["pytorch", "onnxruntime", "openvino"]
    assert get_runtime(" ONNXRuntime ").name == "onnxruntime"
    with pytest.raises(KDCompressError, match="unknown runtime 'tensorrt'; choose from pytorch, onnxruntime, openvino"):
        get_runtime("tensorrt")
    assert "onnxruntime" in [row.name for row in available_runtimes()]
    assert all(row.exported for row in available_runtimes())


def test_a_runtime_that_is_not_installed_names_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(KDCompressError, match=r"the OpenVINO runtime is not installed; run pip install "
                       r"'kdcompress\[openvino\]'"):
        get_runtime("openvino").require()


def test_registry_imports_no_runtime():
    import subprocess

    code = ("import sys, kdcompress.runtime.registry as r; r.available_runtimes(); "
            "from kdcompress.runtime import Predictor; "
            "print(sorted(m for m in ('torch', 'transformers', 'openvino', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_runtime_of_dir(tmp_path):
    with pytest.raises(KDCompressError, match="holds neither model.onnx nor openvino_model.xml"):
        runtime_of_dir(tmp_path)
    (tmp_path / "openvino_model.xml").write_text("")
    assert runtime_of_dir(tmp_path).name == "openvino"
    assert ModelSpec(str(tmp_path)).with_runtime("openvino") == ModelSpec(str(tmp_path), "openvino")


# --- a new runtime is one row: export, predict and bench take it -----------------------------------

def test_a_registered_runtime_is_taken_by_export_predict_and_bench(stub_runtime, tiny_classifier_dir, data_dir,
                                                                    tmp_path):
    from kdcompress import export_onnx
    from kdcompress.bench.run import run_bench
    from kdcompress.runtime import Predictor
    from kdcompress.runtime.predict import predict_file

    out = export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "stub", runtime="stubrt", task="sib200",
                      langs="en", data_dir=data_dir, check_samples=4, progress=False)
    assert out.runtime == "stubrt" and out.model_path == tmp_path / "stub" / STUB_FILE
    assert not (tmp_path / "stub" / "model.onnx").exists()
    with pytest.raises(KDCompressError, match="--quantize dynamic is ONNX Runtime.s int8; Stub Runtime has none: --runtime onnxruntime"):
        export_onnx(model_dir=tiny_classifier_dir, out=tmp_path / "q", runtime="stubrt", quantize="dynamic")

    predictor = Predictor(tmp_path / "stub", threads=1)  # auto: from the files
    assert predictor.runtime == "stubrt" and predictor.predict(["Where is the station?"])[0].label
    texts = tmp_path / "in.txt"
    texts.write_text("Where is the station?\nThe match ended in a draw.\n")
    result = predict_file(model_dir=str(tmp_path / "stub"), input=str(texts), out=str(tmp_path / "p.jsonl"),
                          runtime="stubrt", progress=False)
    assert result.rows == 2 and result.backend == "stubrt"

    bench = run_bench(models={"stub": tmp_path / "stub"}, task="sib200",
                      target_langs="de", data_dir=data_dir, out=tmp_path / "r", limit=8, runtime="stubrt",
                      memory=False, throughput=False, real_lengths=False, batch_sizes=[2], seq_lens=[16], warmup=1,
                      repeats=2, rounds=1, max_seconds_per_cell=0.2, threads=1, quiet=True)
    info = bench.payload["models"]["stub"]
    assert info["runtime"] == "stubrt" and info["format"] == "stubrt" and info["size_mb"] > 0
    assert json.loads((tmp_path / "r" / "bench.json").read_text())["settings"]["models"]["stub"] == \
        str(tmp_path / "stub")


def test_the_command_line_takes_a_registered_runtime(stub_runtime, tiny_classifier_dir, tmp_path):
    from typer.testing import CliRunner

    from kdcompress.cli import app
    from kdcompress.runtime.predict import PredictConfig

    assert PredictConfig.from_dict({"model_dir": "m", "out": "o", "runtime": "stubrt"}).runtime == "stubrt"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.jsonl"),
                                      "--runtime", "tensorrt"])
    assert result.exit_code == 2 and "auto, onnxruntime, openvino, stubrt" in " ".join(result.output.split())
