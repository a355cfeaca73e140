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
from kdcompress.runtime.backends import ort_session_options

DEFAULT_MAX_LENGTH = 128
WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
ONNX_FILE_PATTERNS = ("*.onnx", "*.onnx.data", "*.onnx_data", "*.data")
OPENVINO_FILE = "openvino_model.xml"
OPENVINO_FILE_PATTERNS = ("openvino_model.xml", "openvino_model.bin")
EXPORTED_FORMATS = ("onnx", "openvino")  # directories made by `kdcompress export-onnx`
RUNTIMES = ("onnxruntime", "openvino")
# RoBERTa-style position ids start after the padding index, so two positions are unusable.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


def detect_format(path: Path) -> str:
    """'onnx' or 'pytorch', from the files present; a clear error for anything else."""
    if not path.exists():
        raise KDCompressError(f"model path {path} does not exist; "
                              "pass --model NAME=PATH with a model or ONNX directory")
    if not path.is_dir():
        raise KDCompressError(f"model path {path} is a file; "
                              "pass the directory that holds it (with config.json and tokenizer files)")
    if (path / "model.onnx").is_file():
        return "onnx"
    if (path / OPENVINO_FILE).is_file():
        return "openvino"
    if (path / "config.json").is_file() and any(any(path.glob(p)) for p in WEIGHT_FILE_PATTERNS):
        return "pytorch"
    raise KDCompressError(
        f"{path} is neither a model directory (config.json + model.safetensors) nor an ONNX directory "
        "(model.onnx, made by `kdcompress export-onnx`); point --model to one of those"
    )


def files_size_bytes(path: Path, patterns: Sequence[str]) -> int:
    files = {f for pattern in patterns for f in path.glob(pattern) if f.is_file()}
    return sum(f.stat().st_size for f in files)


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KDCompressError(f"{path} has no config.json; the ONNX directory must hold the model's config.json "
                              "(re-export it with `kdcompress export-onnx`)") from None
    except json.JSONDecodeError as exc:
        raise KDCompressError(f"{path}/config.json is not valid JSON ({exc.msg}); "
                              "re-create the model directory") from None


def labels_from_config(config: dict, path: Path) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not id2label:
        raise KDCompressError(f"{path}/config.json has no id2label; "
                              "the model must be a classifier fine-tuned for the task")
    try:
        by_index = {int(index): str(name) for index, name in id2label.items()}
    except (TypeError, ValueError, AttributeError):
        raise KDCompressError(f"{path}/config.json has a malformed id2label; "
                              'expected {"0": "label", ...}') from None
    if sorted(by_index) != list(range(len(by_index))):
        raise KDCompressError(f"{path}/config.json id2label indices are not 0..{len(by_index) - 1}; fix the config")
    return tuple(by_index[i] for i in range(len(by_index)))


def usable_max_length(requested: int, config: dict, tokenizer: Any) -> int:
    limits = [requested]
    if config.get("max_position_embeddings"):
        limits.append(int(config["max_position_embeddings"]) - POSITION_OFFSET.get(config.get("model_type"), 0))
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:  # HF uses a huge sentinel for "unset"
        limits.append(tokenizer_max)
    return min(limits)


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise KDCompressError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    return device


class Runner(abc.ABC):
    """A loaded model: tokenizer, label names in the model's own order, and a logits function."""

    format: str = ""

    def __init__(self, path: Path, device: str, threads: int, max_length: int):
        self.path = path
        self.device = device
        self.threads = threads
        self.config = read_config(path)
        self.labels = labels_from_config(self.config, path)
        self.tokenizer = self._load_tokenizer()
        # max_positions bounds fixed-length latency cells; max_length (<= it) is the truncation length.
        self.max_positions = usable_max_length(10**9, self.config, self.tokenizer)
        self.max_length = min(max_length, self.max_positions)

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
            "labels": list(self.labels),
            "max_length": self.max_length,
            "max_positions": self.max_positions,
            "size_mb": round(self.size_bytes() / 2**20, 2),
        }


class TorchRunner(Runner):
    format = "pytorch"

    def __init__(self, path: Path, device: str, threads: int, max_length: int = DEFAULT_MAX_LENGTH):
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
        return files_size_bytes(self.path, WEIGHT_FILE_PATTERNS)

    def describe(self) -> dict:
        info = super().describe()
        info["parameters"] = sum(p.numel() for p in self.model.parameters())
        info["precision"] = "fp32"
        info["quantization"] = "none"
        info["intra_op_threads"] = self._torch.get_num_threads()
        return info


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: Path, device: str, threads: int, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__(path, device, threads, max_length)
        import onnxruntime as ort

        self.export_info = self._read_export_info()
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

    def _read_export_info(self) -> dict:
        path = self.path / "export.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}

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
        return files_size_bytes(self.path, ONNX_FILE_PATTERNS)

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

    def __init__(self, path: Path, device: str, threads: int, max_length: int = DEFAULT_MAX_LENGTH, *,
                 runtime: str | None = None):
        from kdcompress.runtime.predictor import Predictor

        self.export_info = _read_json(path / "export.json")
        self.predictor = Predictor(path, threads=threads, backend=runtime or "auto", max_length=max_length)
        self.runtime = self.predictor.backend_name
        self.format = "onnx" if self.runtime == "onnxruntime" else "openvino"
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
        return files_size_bytes(self.path, ONNX_FILE_PATTERNS if self.runtime == "onnxruntime" and
                                (self.path / "model.onnx").is_file() else
                                OPENVINO_FILE_PATTERNS if (self.path / OPENVINO_FILE).is_file() else ONNX_FILE_PATTERNS)

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


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def openvino_can_run(path: Path) -> str | None:
    """None when OpenVINO can run the exported directory `path`, else why not (one clause)."""
    if (path / OPENVINO_FILE).is_file():
        return None
    info = _read_json(path / "export.json")
    optimize = info.get("optimize")
    if isinstance(optimize, dict) and optimize.get("enabled"):
        return "its graph is fused with ONNX Runtime's own operators (--optimize)"
    quantization = info.get("quantization")
    if info.get("precision") == "int8" and isinstance(quantization, dict) and quantization.get("mode") == "dynamic":
        return "ONNX Runtime's dynamic int8 operators (MatMulInteger) are not OpenVINO's"
    return None


def load_runner(path: str | Path, device: str = "cpu", threads: int = 1, *,
                max_length: int = DEFAULT_MAX_LENGTH, runtime: str | None = None) -> Runner:
    """Load a PyTorch model directory or an exported (ONNX or OpenVINO) directory behind one interface.

    `threads` is the intra-op thread count (ONNX Runtime per session; PyTorch process-wide).
    Exported directories on the CPU run through `kdcompress.runtime.Predictor` on `runtime`
    (onnxruntime or openvino; None: the directory's own); on CUDA, ONNX Runtime's CUDA provider.
    The load time is kept on the runner as `load_seconds`.
    """
    path = Path(path).expanduser()
    check_device(device)
    kind = detect_format(path)
    if runtime is not None and runtime not in RUNTIMES:
        raise KDCompressError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if kind == "pytorch" and runtime is not None:
        raise KDCompressError(f"{path} is a PyTorch model directory; runtimes apply to exported directories only")
    if kind == "openvino" and runtime == "onnxruntime":
        raise KDCompressError(f"{path} holds an OpenVINO model; run it on openvino")
    if kind == "openvino" and device != "cpu":
        raise KDCompressError(f"{path} holds an OpenVINO model, which kdcompress runs on the CPU; use --device cpu")
    if runtime == "openvino" and openvino_can_run(path):
        raise KDCompressError(f"OpenVINO cannot run {path}: {openvino_can_run(path)}; export it with "
                              "`kdcompress export-onnx --runtime openvino`")
    started = time.perf_counter()
    if kind == "pytorch":
        runner: Runner = TorchRunner(path, device, threads, max_length)
    elif device == "cuda":
        runner = OnnxRunner(path, device, threads, max_length)
    else:
        runner = PredictorRunner(path, device, threads, max_length, runtime=runtime)
    runner.load_seconds = time.perf_counter() - started
    return runner
