"""The two inference runtimes behind one small interface: `input_names` and `run(feed) -> logits`.

ONNX Runtime runs `model.onnx`; OpenVINO runs `openvino_model.xml` (or reads `model.onnx` itself).
Which one a directory gets is decided from what it holds, unless the caller names one.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kdcompress.errors import KDCompressError, describe

ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino_model.xml"
EXPORT_REPORT = "export.json"
BACKENDS = ("auto", "onnxruntime", "openvino")
OV_PRECISIONS = ("f32", "bf16")
OPENVINO_INSTALL = "pip install 'kdcompress[openvino]'"


def import_openvino() -> Any:
    """The `openvino` module, or one line naming the install command."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise KDCompressError(f"the OpenVINO runtime is not installed; run {OPENVINO_INSTALL}") from None


def pick_model_file(model_dir: Path, backend: str) -> tuple[str, Path]:
    """(backend, model file) for `backend` in BACKENDS, from what `model_dir` holds."""
    if backend not in BACKENDS:
        raise KDCompressError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    onnx_file, ov_file = model_dir / ONNX_FILE, model_dir / OPENVINO_FILE
    if not onnx_file.is_file() and not ov_file.is_file():
        raise KDCompressError(f"{model_dir} holds neither {ONNX_FILE} nor {OPENVINO_FILE}; pass a directory "
                              "made by `kdcompress export-onnx`")
    if backend == "onnxruntime" and not onnx_file.is_file():
        raise KDCompressError(f"{model_dir} holds an OpenVINO model, not {ONNX_FILE}; use backend 'openvino' "
                              "(or 'auto')")
    if backend == "openvino" or (backend == "auto" and not onnx_file.is_file()):
        return "openvino", ov_file if ov_file.is_file() else onnx_file
    return "onnxruntime", onnx_file


def recorded_precision(model_dir: Path) -> str | None:
    """The OpenVINO inference precision the export recorded (export.json: openvino.inference_precision)."""
    try:
        report = json.loads((model_dir / EXPORT_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = (report.get("openvino") or {}).get("inference_precision") if isinstance(report, dict) else None
    return value if value in OV_PRECISIONS else None


def ort_session_options(threads: int | None, *, spinning: bool = True):
    """ONNX Runtime options for one request at a time: `threads` intra-op threads (None: ORT's default, the
    physical cores), one operator at a time, every graph optimisation, quiet logs. `spinning=False` stops idle
    threads busy-waiting, which benchmarks need on shared cores so that engines timed in turn do not starve."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, *, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise KDCompressError("onnxruntime is not installed; run pip install onnxruntime") from None
        options = ort_session_options(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - corrupt or truncated file
            raise KDCompressError(f"ONNX Runtime cannot load {path} ({describe(exc)}); re-export it with "
                                  "`kdcompress export-onnx`") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.threads = threads
        self.precision = None

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], dict(feed))[0]


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: Path, *, threads: int | None, precision: str, cache_dir: Path | None = None):
        ov = import_openvino()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:
            # OpenVINO's own model cache: the compiled form, keyed by model, CPU and settings, so a later process
            # maps it instead of compiling (0.36 -> 0.10 s for a weights-only int8 student, 1.3 -> 0.16 s and
            # 915 -> 495 MB peak for a fully int8 one; benchmarks/README.md).
            config["CACHE_DIR"] = str(_writable_dir(cache_dir))
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise KDCompressError(f"OpenVINO cannot load {path} ({describe(exc)}); re-export it with "
                                  "`kdcompress export-onnx --runtime openvino`") from None
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.threads = threads
        self.precision = precision

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        self.request.infer(dict(feed))
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused


def _writable_dir(path: Path) -> Path:
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KDCompressError(f"cannot create the OpenVINO cache folder {path} ({describe(exc)}); pass a writable "
                              "folder as --cache-dir (cache_dir=), or leave it out") from None
    if not os.access(path, os.W_OK):
        raise KDCompressError(f"the OpenVINO cache folder {path} is not writable; pass a writable folder as "
                              "--cache-dir (cache_dir=), or leave it out")
    return path


def open_backend(model_dir: Path, backend: str = "auto", *, threads: int | None = None,
                 precision: str | None = None, cache_dir: str | os.PathLike | None = None) -> OrtBackend | OpenVinoBackend:
    """Load `model_dir`'s model on `backend`; `precision` (f32/bf16) is OpenVINO's inference precision and
    `cache_dir` its compiled-model cache (ONNX Runtime has none: it ignores it)."""
    if threads is not None and threads < 1:
        raise KDCompressError(f"threads must be at least 1, not {threads}")
    if precision is not None and precision not in OV_PRECISIONS:
        raise KDCompressError(f"unknown OpenVINO precision {precision!r}; choose from {', '.join(OV_PRECISIONS)}")
    chosen, path = pick_model_file(model_dir, backend)
    if chosen == "onnxruntime":
        return OrtBackend(path, threads=threads)
    return OpenVinoBackend(path, threads=threads, precision=precision or recorded_precision(model_dir) or "f32",
                           cache_dir=Path(cache_dir) if cache_dir else None)
