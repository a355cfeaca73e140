"""Which int8 to make: the scheme picked from the CPU's features, and the `QuantizationSpec` handed to the
quantization step (Optimum's `onnxruntime/configuration.py` idea: quantization is a small config object).

The int8 scheme (weight/activation types, operator format, per-channel, reduce-range) is
picked from the CPU the export runs on, following ONNX Runtime's own guidance (the
`quantize_static` docstring and its quantization guide):

* x86 without VNNI (AVX2, AVX-512F/BW only): the u8 x s8 kernels use VPMADDUBSW, whose
  int16 intermediate sums can saturate, so weights are reduced to 7 bits (`reduce_range`).
* x86 with VNNI (AVX512-VNNI, AVX-VNNI): VPDPBUSD accumulates in int32 - full 8-bit range.
* aarch64: signed 8-bit dot products (SDOT on `asimddp`) have no saturation issue either.

Weights are always signed int8 (QInt8). On the shapes measured for this project, signed
weights ran 19-27% faster than unsigned ones on an AVX2 machine, and 1.7x faster on an
AVX512-VNNI machine (benchmarks/README.md): MLAS's fast kernels are u8 x s8.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from kdcompress.errors import KDCompressError

# Operator types whose weights we quantize. Attention / EmbedLayerNormalization only exist in
# graphs fused by `--optimize`; ORT quantizes them as QAttention / QEmbedLayerNormalization.
MATMUL_OP_TYPES = ("MatMul", "Attention")
EMBEDDING_OP_TYPES = ("Gather", "EmbedLayerNormalization")


# --- CPU features ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set facts that decide the int8 scheme."""

    arch: str
    model_name: str
    flags: tuple[str, ...]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def vnni(self) -> bool:
        return self.has("avx512_vnni") or self.has("avx_vnni")

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386")

    @property
    def is_arm64(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    def summary(self) -> dict:
        interesting = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
        return {"arch": self.arch, "model_name": self.model_name,
                "flags": {flag: self.has(flag) for flag in interesting}}


def detect_cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """Read the CPU's flags from /proc/cpuinfo (x86 `flags`, aarch64 `Features`)."""
    arch = platform.machine().lower()
    model_name = platform.processor() or arch
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""  # macOS / Windows: no cpuinfo; the scheme falls back to the portable choice
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("model name", "cpu model") and value.strip():
            model_name = value.strip()
    if arch == "arm64" and platform.system() == "Darwin":
        flags.add("asimddp")  # every Apple-silicon core has the dot-product extension
    return CpuFeatures(arch=arch, model_name=model_name, flags=tuple(sorted(flags)))


# --- the int8 scheme --------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Scheme:
    """Arguments for onnxruntime.quantization, and why they were chosen."""

    mode: str                 # "dynamic" or "static"
    quant_format: str         # "QOperator" (dynamic: MatMulInteger) or "QDQ"
    weight_type: str          # onnxruntime.quantization.QuantType name
    activation_type: str
    per_channel: bool
    reduce_range: bool
    reason: str

    @property
    def label(self) -> str:
        a = "u8" if self.activation_type == "QUInt8" else "s8"
        w = "u8" if self.weight_type == "QUInt8" else "s8"
        return f"{self.mode} {a}{w} {self.quant_format}" + (" per-channel" if self.per_channel else "") + (
            " reduce-range" if self.reduce_range else "")


def choose_int8_scheme(cpu: CpuFeatures, mode: str = "dynamic") -> Int8Scheme:
    """The fastest int8 scheme that is safe from saturation on `cpu`."""
    if mode not in ("dynamic", "static"):
        raise KDCompressError(f"unknown quantization mode {mode!r}; choose dynamic or static")
    # Dynamic quantization has one format: DynamicQuantizeLinear (u8 activations) + MatMulInteger.
    # Static uses QDQ, ORT's recommended format since 1.11 (QOperator s8s8 is slow on x86).
    quant_format = "QOperator" if mode == "dynamic" else "QDQ"
    activation_type = "QUInt8"
    # Per-channel weights cost nothing measurable with MLAS (scales are applied per output
    # column after the integer GEMM) and keep small-range columns precise.
    per_channel = True
    if cpu.is_arm64:
        if mode == "static":
            activation_type = "QInt8"  # ARM kernels prefer symmetric s8 activations (ORT guidance)
        reason = ("aarch64" + (" with dot product (asimddp)" if cpu.has("asimddp") else "")
                  + ": signed 8-bit kernels do not saturate, full 8-bit range")
        reduce_range = False
    elif cpu.is_x86 and cpu.vnni:
        vnni = "AVX512-VNNI" if cpu.has("avx512_vnni") else "AVX-VNNI"
        reason = f"x86 with {vnni}: u8 x s8 accumulates in int32 without saturation, full 8-bit range"
        reduce_range = False
    elif cpu.is_x86:
        isa = "AVX-512 without VNNI" if cpu.has("avx512bw") else ("AVX2 without VNNI" if cpu.has("avx2") else "SSE")
        reason = (f"x86 {isa}: u8 x s8 uses VPMADDUBSW, whose int16 sums can saturate, "
                  "so weights are reduced to 7 bits")
        reduce_range = True
    else:
        reason = f"{cpu.arch}: unknown CPU; 7-bit weights are the safe choice"
        reduce_range = True
    return Int8Scheme(mode=mode, quant_format=quant_format, weight_type="QInt8",
                      activation_type=activation_type, per_channel=per_channel,
                      reduce_range=reduce_range, reason=reason)


def op_types_to_quantize(*, quantize_embeddings: bool) -> list[str]:
    return list(MATMUL_OP_TYPES) + (list(EMBEDDING_OP_TYPES) if quantize_embeddings else [])


# --- the quantization step's input ------------------------------------------------------------

@dataclass(frozen=True)
class QuantizationSpec:
    """Everything the quantization step needs besides the graph (and, for static, calibration feeds)."""

    scheme: Int8Scheme
    quantize_embeddings: bool = True
    nodes_to_exclude: tuple[str, ...] = ()  # operators kept in fp32 (`--accuracy-goal`)

    @classmethod
    def for_cpu(cls, cpu: CpuFeatures, mode: str, *, quantize_embeddings: bool = True) -> "QuantizationSpec":
        return cls(choose_int8_scheme(cpu, mode), quantize_embeddings)

    @property
    def mode(self) -> str:
        return self.scheme.mode

    @property
    def op_types(self) -> list[str]:
        return op_types_to_quantize(quantize_embeddings=self.quantize_embeddings)

    def excluding(self, nodes: Iterable[str]) -> "QuantizationSpec":
        return dataclasses.replace(self, nodes_to_exclude=tuple(nodes))

    def to_json(self) -> dict:
        """export.json's `quantization` entry."""
        data = dataclasses.asdict(self.scheme)
        data["label"] = self.scheme.label
        data["op_types"] = self.op_types
        data["embeddings"] = "int8" if self.quantize_embeddings else "fp32 (--keep-embeddings-fp32)"
        data["fp32_fallback_nodes"] = list(self.nodes_to_exclude)
        return data
