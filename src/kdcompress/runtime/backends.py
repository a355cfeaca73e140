"""The serving backends of the registry's runtimes behind one small interface: `input_names` and
`run(feed) -> logits`, each built as `Backend(path, threads=, precision=, cache_dir=, spinning=)`.

ONNX Runtime runs `model.onnx`; OpenVINO runs `openvino_model.xml` (or reads `model.onnx` itself).
Which one a directory gets is decided from what it holds (runtime/registry.py), unless the caller names one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kdcompress.errors import KDCompressError, describe
from kdcompress.runtime.registry import EXPORT_REPORT, RUNTIMES, Runtime, exported_runtimes, get_runtime, runtime_of_dir

AUTO = "auto"  # pick the runtime from the files in the directory


def import_openvino() -> Any:
    """The `openvino` module, or one line naming the install command."""
    return get_runtime("openvino").require()


def runtime_choices() -> tuple[str, ...]:
    """What --runtime takes for an exported directory: auto, or a runtime that serves one."""
    return (AUTO, *(row.name for row in exported_runtimes()))


def pick_model_file(model_dir: Path, runtime: str) -> tuple[Runtime, Path]:
    """(runtime row, model file) for `runtime` (a registry name or auto), from what `model_dir` holds."""
    if runtime != AUTO and (runtime not in RUNTIMES or not RUNTIMES[runtime].exported):
        raise KDCompressError(f"unknown runtime {runtime!r}; choose from {', '.join(runtime_choices())}")
    own = runtime_of_dir(model_dir)  # no model file at all: one line naming the files looked for
    row = own if runtime == AUTO else RUNTIMES[runtime]
    path = row.model_file(model_dir)
    if path is None:
        raise KDCompressError(f"{model_dir} holds an {own.model_kind} model, not {' or '.join(row.files)}; use "
                              f"runtime '{own.name}' (or '{AUTO}')")
    return row, path


def recorded_precision(model_dir: Path, precisions: tuple[str, ...]) -> str | None:
    """The inference precision the export recorded (export.json: openvino.inference_precision)."""
    report = read_json_dict(model_dir / EXPORT_REPORT)
    value = (report.get("openvino") or {}).get("inference_precision")
    return value if value in precisions else None


def recorded_static_lengths(model_dir: Path) -> tuple[int, ...]:
    """The batch-1 lengths the export compiled OpenVINO for (export.json: openvino.static_lengths)."""
    lengths = (read_json_dict(model_dir / EXPORT_REPORT).get("openvino") or {}).get("static_lengths") or ()
    return tuple(sorted({int(n) for n in lengths if isinstance(n, int) and n > 0}))


def read_json_dict(path: Path) -> dict:
    """A JSON object file, or {} when it is missing, unreadable or not an object (optional metadata)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def openvino_cannot_run(path: Path) -> str | None:
    """None when OpenVINO can run the exported directory `path`, else why not (one clause)."""
    if RUNTIMES["openvino"].owns(path):
        return None
    info = read_json_dict(path / EXPORT_REPORT)
    optimize = info.get("optimize")
    if isinstance(optimize, dict) and optimize.get("enabled"):
        return "its graph is fused with ONNX Runtime's own operators (--optimize)"
    quantization = info.get("quantization")
    if info.get("precision") == "int8" and isinstance(quantization, dict) and quantization.get("mode") == "dynamic":
        return "ONNX Runtime's dynamic int8 operators (MatMulInteger) are not OpenVINO's"
    return None


def ort_session_options(threads: int | None, *, spinning: bool = True):
    """ONNX Runtime options for one request at a time: `threads` intra-op threads (None: ORT's default, the
    physical cores), one operator at a time, every graph optimisation, quiet logs. `spinning=False` stops idle
    threads busy-waiting, which benchmarks need on shared cores so that engines timed in turn do not starve:
    bench runs every timed runtime with it (Predictor(..., spinning=False))."""
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

    def __init__(self, path: Path, *, threads: int | None, precision: str | None = None,
                 cache_dir: Path | None = None, spinning: bool = True):
        ort = get_runtime(self.name).require()
        options = ort_session_options(threads, spinning=spinning)  # ONNX Runtime has no precision or cache
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
    """OpenVINO's compiled model; with `static_lengths` (default: export.json's), also one compiled at batch 1 for
    each of those lengths.

    Why: OpenVINO's CPU plugin re-prepares its kernels whenever a dynamic input changes shape, and single sentences
    of varying length pay that on almost every call. A sentence padded (masked) to the next static length runs a
    graph that never changes shape: 1.75 against 2.45 ms per SIB-200 sentence for a 6-layer student, for 123 MB more
    memory with four lengths (benchmarks/README.md). Larger batches and longer sentences take the dynamic model."""

    name = "openvino"

    def __init__(self, path: Path, *, threads: int | None, precision: str, cache_dir: Path | None = None,
                 spinning: bool = True, static_lengths: tuple[int, ...] | None = None):
        ov = import_openvino()  # OpenVINO's CPU threads wait without spinning by default
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
            model = core.read_model(str(path))
            self.input_names = [port.get_any_name() for port in model.inputs]
            if static_lengths is None:  # what the export recorded beside the model
                static_lengths = recorded_static_lengths(Path(path).parent)
            self.static_lengths = tuple(sorted(set(static_lengths)))
            self.static_requests = {}
            for length in self.static_lengths:
                fixed = model.clone()  # a clone shares the weights: each length adds only its compiled kernels
                fixed.reshape({name: [1, length] for name in self.input_names})
                self.static_requests[length] = core.compile_model(fixed, "CPU", config).create_infer_request()
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise KDCompressError(f"OpenVINO cannot load {path} ({describe(exc)}); re-export it with "
                                  "`kdcompress export-onnx --runtime openvino`") from None
        self.request = self.compiled.create_infer_request()
        self.threads = threads
        self.precision = precision

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._infer(*self._route(feed))

    def run_dynamic(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """The dynamic-shape model whatever the feed's shape (what the static lengths are checked against)."""
        return self._infer(self.request, feed)

    @staticmethod
    def _infer(request: Any, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        request.infer(dict(feed))
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused

    def _route(self, feed: Mapping[str, np.ndarray]) -> tuple[Any, Mapping[str, np.ndarray]]:
        """The static request whose length is the next at or above a single sentence's, with the sentence padded
        to it (zeros: masked out); else the dynamic request as it is."""
        if not self.static_lengths:
            return self.request, feed
        batch, length = next(iter(feed.values())).shape
        fitting = next((n for n in self.static_lengths if n >= length), None)
        if batch != 1 or fitting is None:
            return self.request, feed
        if fitting > length:
            feed = {name: np.pad(value, ((0, 0), (0, fitting - length))) for name, value in feed.items()}
        return self.static_requests[fitting], feed


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


def open_backend(model_dir: Path, runtime: str = AUTO, *, threads: int | None = None,
                 precision: str | None = None, cache_dir: str | os.PathLike | None = None, spinning: bool = True):
    """Load `model_dir`'s model on `runtime` (a registry name or auto); `precision` is the runtime's inference
    precision (OpenVINO: f32/bf16) and `cache_dir` its compiled-model cache (runtimes without one ignore it)."""
    if threads is not None and threads < 1:
        raise KDCompressError(f"threads must be at least 1, not {threads}")
    row, path = pick_model_file(model_dir, runtime)
    if row.precisions:  # runtimes without a precision choice ignore it
        if precision is not None and precision not in row.precisions:
            raise KDCompressError(f"unknown {row.title} precision {precision!r}; choose from {', '.join(row.precisions)}")
        precision = precision or recorded_precision(model_dir, row.precisions) or row.precisions[0]
    backend = row.resolve("backend")
    return backend(path, threads=threads, precision=precision, cache_dir=Path(cache_dir) if cache_dir else None,
                   spinning=spinning)
