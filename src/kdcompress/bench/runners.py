"""One interface over PyTorch model directories and exported ONNX directories.

A benchmark is only fair if both backends see the same inputs: every runner tokenizes with
its directory's own tokenizer through the same call (`encode`), and only the forward pass
differs. `load_runner` decides the backend from what the directory holds.
"""

from __future__ import annotations

import abc
import inspect
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdcompress.bench.config import DEVICES
from kdcompress.model_weights import load_complete_classifier
from kdcompress.errors import KDCompressError
from kdcompress.errors import describe as describe_error  # not Runner.describe
from kdcompress.model_config import input_length_limit, labels_from_config, trained_max_length
from kdcompress.runtime.backends import ort_session_options, read_json_dict
from kdcompress.runtime.registry import EXPORT_REPORT, RUNTIMES, Runtime, exported_runtimes, get_runtime

DEFAULT_MAX_LENGTH = 128
# The report's "format" of a directory each exported runtime writes (bench.json keeps these names).
FORMATS = {"onnxruntime": "onnx"}


def detect_runtime(path: Path) -> Runtime:
    """The runtime whose files `path` holds (an exported one first, else PyTorch); a clear error otherwise."""
    if not path.exists():
        raise KDCompressError(f"model path {path} does not exist; "
                              "pass --model NAME=PATH with a model or ONNX directory")
    if not path.is_dir():
        raise KDCompressError(f"model path {path} is a file; "
                              "pass the directory that holds it (with config.json and tokenizer files)")
    for row in exported_runtimes():
        if row.owns(path):
            return row
    pytorch = RUNTIMES["pytorch"]
    if (path / "config.json").is_file() and any(any(path.glob(p)) for p in pytorch.size_files):
        return pytorch
    raise KDCompressError(
        f"{path} is neither a model directory (config.json + model.safetensors) nor an ONNX directory "
        "(model.onnx, made by `kdcompress export-onnx`); point --model to one of those"
    )


def files_size_bytes(path: Path, patterns: Sequence[str]) -> int:
    files = {f for pattern in patterns for f in path.glob(pattern) if f.is_file()}
    return sum(f.stat().st_size for f in files)


def read_config(path: Path) -> dict:  # a model folder's config.json, required
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"{path} has no config.json; the ONNX directory must hold the model's config.json "
                              "(re-export it with `kdcompress export-onnx`)") from None
    except json.JSONDecodeError as exc:
        raise KDCompressError(f"{path}/config.json is not valid JSON ({exc.msg}); "
                              "re-create the model directory") from None


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise KDCompressError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    return device


class Runner(abc.ABC):
    """A loaded model: tokenizer, label names in the model's own order, and a logits function."""

    format: str = ""

    def __init__(self, path: Path, device: str, threads: int, max_length: int | None):
        self.path = path
        self.device = device
        self.threads = threads
        self.config = read_config(path)
        self.labels = labels_from_config(self.config, path / "config.json")
        self.tokenizer = self._load_tokenizer()
        # max_positions bounds fixed-length latency cells; max_length (<= it) is the truncation length.
        self.max_positions = input_length_limit(self.config, getattr(self.tokenizer, "model_max_length", None))
        requested = max_length or trained_max_length(path) or DEFAULT_MAX_LENGTH
        self.max_length = min(requested, self.max_positions)

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.path)
        except Exception as exc:  # transformers raises many types for a broken tokenizer
            raise KDCompressError(f"the tokenizer in {self.path} does not load ({describe_error(exc)}); "
                                  "copy the model's tokenizer files into that directory") from None

    def encode(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None, *,
               pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize one batch. Default: dynamic padding to the longest sentence (what serving sees);
        `pad_to=L`: every row padded or truncated to exactly L tokens (a fixed-shape latency cell)."""
        pairs = list(text_pairs) if text_pairs is not None and any(p is not None for p in text_pairs) else None
        encoded = self.tokenizer(list(texts), pairs, truncation=True, return_tensors="np",
                                 max_length=pad_to or self.max_length,
                                 padding="max_length" if pad_to else "longest")
        return {name: np.asarray(values, dtype=np.int64) for name, values in encoded.items()}

    @abc.abstractmethod
    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, num_labels) as float32 numpy; the model-only part of the latency."""

    def logits(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None, *,
               pad_to: int | None = None) -> np.ndarray:
        """Tokenize and run: the end-to-end latency a caller sees."""
        return self.forward(self.encode(texts, text_pairs, pad_to=pad_to))

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Bytes of the model's weight files."""

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": str(self.path),
            "device": self.device,
            "model_type": self.config.get("model_type"),
            "layers": self.config.get("num_hidden_layers") or self.config.get("n_layers"),
            "hidden_size": self.config.get("hidden_size") or self.config.get("dim"),
            "intermediate_size": self.config.get("intermediate_size") or self.config.get("hidden_dim"),
            "vocab_size": self.config.get("vocab_size"),
            "labels": list(self.labels),
            "max_length": self.max_length,
            "max_positions": self.max_positions,
            "size_mb": round(self.size_bytes() / 2**20, 2),
        }


class TorchRunner(Runner):
    format = "pytorch"

    def __init__(self, path: Path, device: str, threads: int, max_length: int | None = None):
        super().__init__(path, device, threads, max_length)
        import torch
        if device == "cuda" and not torch.cuda.is_available():
            raise KDCompressError(
                f"--device cuda: PyTorch {torch.__version__} sees no CUDA GPU on this machine; use --device cpu"
            )
        set_torch_threads(threads)
        self._torch = torch
        from kdcompress.static_model import register_static_student

        register_static_student()
        model = load_complete_classifier(path, what="PyTorch model", dtype=torch.float32)  # no random weights
        self.model = model.to(device).eval()
        # DistilBERT takes no token_type_ids; feed only what forward() accepts, as ONNX feeds only graph inputs.
        self._accepted = set(inspect.signature(self.model.forward).parameters)

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in encoded.items() if k in self._accepted}
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        return logits.float().cpu().numpy()  # .cpu() also waits for the GPU, so timings are complete

    def size_bytes(self) -> int:
        return files_size_bytes(self.path, RUNTIMES["pytorch"].size_files)

    def describe(self) -> dict:
        info = super().describe()
        info["parameters"] = sum(p.numel() for p in self.model.parameters())
        info["precision"] = "fp32"
        info["quantization"] = "none"
        info["intra_op_threads"] = self._torch.get_num_threads()
        return info


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: Path, device: str, threads: int, max_length: int | None = None):
        super().__init__(path, device, threads, max_length)
        import onnxruntime as ort

        self.export_info = read_json_dict(path / EXPORT_REPORT)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise KDCompressError(
                    f"--device cuda: ONNX Runtime {ort.__version__} has no CUDA provider here (no GPU, or the CPU-only "
                    "onnxruntime package); install onnxruntime-gpu on a GPU machine, or use --device cpu"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # No busy-waiting between runs: models are timed in turn on shared cores.
        options = ort_session_options(threads, spinning=False)
        try:
            self.session = ort.InferenceSession(str(path / "model.onnx"), options, providers=providers)
        except Exception as exc:
            raise KDCompressError(f"the ONNX model {path / 'model.onnx'} does not load ({describe_error(exc)}); "
                                  "re-export it with `kdcompress export-onnx`") from None
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise KDCompressError("--device cuda: ONNX Runtime could not start its CUDA provider (check the CUDA and "
                                  "cuDNN libraries match onnxruntime-gpu), or use --device cpu")
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = "logits" if "logits" in outputs else outputs[0]

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        from kdcompress.deploy.onnx_feed import onnx_feed

        try:
            (logits,) = self.session.run([self._output], onnx_feed(self.session, encoded))
        except KDCompressError:
            raise
        except Exception as exc:  # e.g. a graph exported with a fixed batch or sequence length
            raise KDCompressError(f"the ONNX model in {self.path} failed on a batch of shape "
                                  f"{tuple(encoded['input_ids'].shape)} ({describe_error(exc)}); re-export it with "
                                  "dynamic batch and sequence axes") from None
        return np.asarray(logits, dtype=np.float32)

    def size_bytes(self) -> int:
        return files_size_bytes(self.path, RUNTIMES["onnxruntime"].size_files)

    def describe(self) -> dict:
        info = super().describe()
        # export.json (written by `kdcompress export-onnx`) says what the graph is; without it, assume plain fp32.
        precision = self.export_info.get("precision", "fp32")
        quantization = self.export_info.get("quantization")
        optimize = self.export_info.get("optimize")
        info["precision"] = precision
        info["quantization"] = "none" if precision == "fp32" else precision
        info["quantization_scheme"] = quantization.get("label") if isinstance(quantization, dict) else None
        info["optimized"] = bool(optimize.get("enabled")) if isinstance(optimize, dict) else None
        info["providers"] = self.session.get_providers()
        info["intra_op_threads"] = self.threads
        info["inter_op_threads"] = 1
        return info


def set_torch_threads(threads: int) -> None:
    """PyTorch's thread pools are process-wide; inter-op can only be set before first use, so try."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed by earlier parallel work in this process; intra-op is what matters here


class PredictorRunner(Runner):
    """An exported directory served by `kdcompress.runtime.Predictor`, as `kdcompress predict` serves it:
    ONNX Runtime or OpenVINO, tokenized by the `tokenizers` library alone (no torch, no transformers)."""

    def __init__(self, path: Path, device: str, threads: int, max_length: int | None = None, *,
                 runtime: str | None = None):
        from kdcompress.runtime.predictor import Predictor

        self.export_info = read_json_dict(path / EXPORT_REPORT)
        # No busy-waiting between runs, as for OnnxRunner: every timed runtime under the same session settings.
        self.predictor = Predictor(path, threads=threads, runtime=runtime or "auto", max_length=max_length,
                                   spinning=False)
        self.runtime = self.predictor.runtime
        self.format = FORMATS.get(self.runtime, self.runtime)
        self._fixed: dict[int, Any] = {}
        super().__init__(path, device, threads, max_length)

    def _load_tokenizer(self):
        return None  # the predictor's own encoder (tokenizer.json) does the work

    def _encoder(self, length: int | None):
        if length is None or length == self.predictor.encoder.max_length:
            return self.predictor.encoder
        if length not in self._fixed:
            from kdcompress.runtime.encoding import Encoder

            self._fixed[length] = Encoder.from_dir(self.path, self.config, max_length=length)
        return self._fixed[length]

    def encode(self, texts: Sequence[str], text_pairs: Sequence[str | None] | None = None, *,
               pad_to: int | None = None) -> dict[str, np.ndarray]:
        pairs = list(text_pairs) if text_pairs is not None and any(p is not None for p in text_pairs) else None
        encoder = self._encoder(pad_to or self.max_length)
        return encoder.pad(encoder.encode(list(texts), pairs), width=pad_to)

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.predictor.backend.run(self.predictor._feed(encoded)), dtype=np.float32)

    def size_bytes(self) -> int:
        # The files the runtime loaded: its own export's, else those of the runtime whose export it reads.
        row = get_runtime(self.runtime)
        return files_size_bytes(self.path, (row if row.owns(self.path) else detect_runtime(self.path)).size_files)

    def describe(self) -> dict:
        info = super().describe()
        precision = self.export_info.get("precision", "fp32")
        quantization = self.export_info.get("quantization")
        optimize = self.export_info.get("optimize")
        info["runtime"] = self.runtime
        info["exported_for"] = self.export_info.get("runtime", "onnxruntime")
        info["precision"] = precision
        info["quantization"] = "none" if precision == "fp32" else precision
        info["quantization_scheme"] = (quantization.get("label") or quantization.get("method")
                                       if isinstance(quantization, dict) else None)
        info["int8_control"] = (self.export_info.get("int8_control") or {}).get("kept")
        info["optimized"] = bool(optimize.get("enabled")) if isinstance(optimize, dict) else None
        info["inference_precision"] = self.predictor.backend.precision
        info["intra_op_threads"] = self.threads
        info["served_by"] = "kdcompress.runtime.Predictor"
        return info


def load_runner(path: str | Path, device: str = "cpu", threads: int = 1, *,
                max_length: int | None = None, runtime: str | None = None) -> Runner:
    """Load a PyTorch model directory or an exported directory behind one interface.

    `threads` is the intra-op thread count (ONNX Runtime per session; PyTorch process-wide).
    Exported directories on the CPU run through `kdcompress.runtime.Predictor` on `runtime`
    (a name of the runtime registry; None: the directory's own); on CUDA, ONNX Runtime's CUDA provider.
    The load time is kept on the runner as `load_seconds`.
    """
    path = Path(path).expanduser()
    check_device(device)
    own = detect_runtime(path)
    row = own if runtime is None else get_runtime(runtime)
    if not own.exported and runtime is not None:
        raise KDCompressError(f"{path} is a PyTorch model directory; runtimes apply to exported directories only")
    if own.exported and not row.exported:
        raise KDCompressError(f"{path} is an exported directory; run it on "
                              f"{' or '.join(r.name for r in exported_runtimes())}")
    if own.exported and row.why_not(path):
        raise KDCompressError(f"{row.title} cannot run {path}: {row.why_not(path)}; export it with "
                              f"`kdcompress export-onnx --runtime {row.name}`")
    if device not in row.devices:
        raise KDCompressError(f"{path} holds an {row.model_kind} model, which kdcompress runs on the CPU; use --device cpu")
    started = time.perf_counter()
    if not own.exported:
        runner: Runner = TorchRunner(path, device, threads, max_length)
    elif device == "cuda":
        runner = OnnxRunner(path, device, threads, max_length)
    else:
        runner = PredictorRunner(path, device, threads, max_length, runtime=runtime)
    runner.load_seconds = time.perf_counter() - started
    return runner
