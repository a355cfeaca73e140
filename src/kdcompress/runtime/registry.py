"""Every inference runtime kdcompress knows, as one table: adding one is a row here plus its module.

A row is data: file names, install hint, and the dotted paths ("module:name") of what the runtime
brings - its serving backend, its export step, its int8 control's rungs. Paths are resolved on
use, so importing this module (as the torch-free `Predictor` does) imports no runtime at all.

    from kdcompress.runtime.registry import get_runtime, available_runtimes
    ort = get_runtime("onnxruntime")          # one line naming the choices for an unknown name
    ort.require()                             # one line with the pip command when it is not installed
    [row.name for row in available_runtimes()]  # those that can run on this machine
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kdcompress.errors import KDCompressError

EXPORT_REPORT = "export.json"


@dataclass(frozen=True)
class Runtime:
    """One inference engine. `exported` runtimes serve directories made by `kdcompress export-onnx`."""

    name: str  # the value of --runtime
    title: str  # how reports and messages name it
    model_kind: str  # what messages call the model its export writes ("an ONNX model")
    package: str  # the importable package whose presence means it can run here
    install: str  # the command that installs it
    files: tuple[str, ...]  # the model file its export writes first, then others it can also load
    size_files: tuple[str, ...]  # glob patterns of the files its model's size is measured over
    exported: bool = True  # False: a training framework's own model directory (PyTorch)
    backend: str | None = None  # "module:Class" serving an exported directory (kdcompress.runtime.backends)
    export_step: str | None = None  # "module:function(run, staging, parity, check, fp32_path, fp32_check)"
    export_requires: str | None = None  # "module:function(config)": missing libraries, before any work
    quantize_modes: tuple[str, ...] = ("none",)  # the --quantize modes its export writes
    int8_tool: str = ""  # what makes its int8, for messages ("NNCF")
    can_fuse: bool = False  # whether --optimize (ONNX Runtime's fused operators) runs on it
    int8_rungs: tuple[str, ...] = ()  # the int8 control's fallbacks, in the order they are tried
    precisions: tuple[str, ...] = ()  # inference precisions it can be asked for (--precision)
    static_lengths: bool = False  # whether its export also compiles batch-1 static lengths (--openvino-static-lengths)
    devices: tuple[str, ...] = ("cpu",)
    cannot_run: str | None = None  # "module:function(path) -> reason | None" for an exported directory

    def available(self) -> bool:
        """Whether this machine can run it (its package is installed)."""
        try:
            return importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):
            return False

    def require(self) -> Any:
        """Its package, imported; or one line naming the install command."""
        try:
            return importlib.import_module(self.package)
        except ImportError:
            raise KDCompressError(f"the {self.title} runtime is not installed; run {self.install}") from None

    def resolve(self, field: str) -> Any:
        """The object a "module:name" field names, imported now."""
        target = getattr(self, field)
        if target is None:
            raise KDCompressError(f"the {self.title} runtime has no {field.replace('_', ' ')}; choose from "
                                  f"{', '.join(r.name for r in RUNTIMES.values() if getattr(r, field))}")
        return load_dotted(target)

    def owns(self, model_dir: Path) -> bool:
        """Whether `model_dir` holds the model file this runtime's export writes."""
        return (Path(model_dir) / self.files[0]).is_file()

    def model_file(self, model_dir: Path) -> Path | None:
        """The first file of `files` that `model_dir` holds, else None."""
        return next((Path(model_dir) / f for f in self.files if (Path(model_dir) / f).is_file()), None)

    def why_not(self, model_dir: Path) -> str | None:
        """None when it can run the exported directory, else why not (one clause)."""
        if self.model_file(model_dir) is None:
            return f"it holds no {' or '.join(self.files)}"
        return load_dotted(self.cannot_run)(Path(model_dir)) if self.cannot_run else None


def load_dotted(target: str | Callable) -> Any:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_ORT_FILES = ("*.onnx", "*.onnx.data", "*.onnx_data", "*.data")

RUNTIMES: dict[str, Runtime] = {}


def register_runtime(row: Runtime) -> Runtime:
    """Add (or replace) a row, e.g. from a test or a plugin; returns it."""
    RUNTIMES[row.name] = row
    return row


def unregister_runtime(name: str) -> None:
    RUNTIMES.pop(name, None)


register_runtime(Runtime(
    name="pytorch", title="PyTorch", model_kind="PyTorch", package="torch", install="pip install torch",
    files=("config.json",), size_files=("*.safetensors", "pytorch_model*.bin"), exported=False,
    devices=("cpu", "cuda")))
register_runtime(Runtime(
    name="onnxruntime", title="ONNX Runtime", model_kind="ONNX", package="onnxruntime", install="pip install onnxruntime",
    files=("model.onnx",), size_files=_ORT_FILES,
    backend="kdcompress.runtime.backends:OrtBackend",
    export_step="kdcompress.deploy.export:export_onnxruntime_step",
    quantize_modes=("none", "dynamic", "static"), int8_tool="onnxruntime.quantization", can_fuse=True,
    int8_rungs=("default", "per_channel_reduced_range", "fp32_embeddings", "sensitive_ops_fp32"),
    devices=("cpu", "cuda")))
register_runtime(Runtime(
    name="openvino", title="OpenVINO", model_kind="OpenVINO", package="openvino", install="pip install 'kdcompress[openvino]'",
    files=("openvino_model.xml", "model.onnx"), size_files=("openvino_model.xml", "openvino_model.bin"),
    backend="kdcompress.runtime.backends:OpenVinoBackend",
    export_step="kdcompress.deploy.export:export_openvino_step",
    export_requires="kdcompress.deploy.openvino_step:require_libraries",
    quantize_modes=("none", "static", "weights"), int8_tool="NNCF",
    int8_rungs=("default", "per_channel_reduced_range", "fp32_embeddings", "int8_weights_only", "sensitive_ops_fp32"),
    precisions=("f32", "bf16"), static_lengths=True,
    cannot_run="kdcompress.runtime.backends:openvino_cannot_run"))


def get_runtime(name: str) -> Runtime:
    """The row called `name`, or one line naming the choices."""
    row = RUNTIMES.get(str(name).strip().lower())
    if row is None:
        raise KDCompressError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return row


def exported_runtimes() -> list[Runtime]:
    """The runtimes that serve exported directories, in the order `auto` tries them."""
    return [row for row in RUNTIMES.values() if row.exported]


def available_runtimes(*, exported: bool = True) -> list[Runtime]:
    """The runtimes this machine can run (exported ones only unless `exported=False`)."""
    return [row for row in RUNTIMES.values() if row.available() and (row.exported or not exported)]


def runtime_of_dir(model_dir: Path) -> Runtime:
    """The runtime whose export wrote `model_dir`'s model file (the first in table order)."""
    for row in exported_runtimes():
        if row.owns(model_dir):
            return row
    files = list(dict.fromkeys(row.files[0] for row in exported_runtimes()))
    raise KDCompressError(f"{model_dir} holds neither {' nor '.join(files)}; pass a directory made by "
                          "`kdcompress export-onnx`")


@dataclass(frozen=True)
class ModelSpec:
    """One model row of a benchmark: its folder and the runtime it runs on (None: the folder's own)."""

    path: str
    runtime: str | None = None

    def with_runtime(self, runtime: str | None) -> "ModelSpec":
        return dataclasses.replace(self, runtime=runtime)
