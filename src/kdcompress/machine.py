"""Facts about the machine a benchmark ran on, so that its numbers can be quoted with context.

Latency depends as much on the CPU (and its vector extensions: int8 kernels need VNNI to
shine) and on the library versions as on the model, so every report carries these.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

# The instruction-set extensions that decide which fp32/int8 kernels ONNX Runtime and PyTorch pick.
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                         "amx_tile", "amx_int8", "amx_bf16")
LIBRARIES = ("kdcompress", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "transformers", "tokenizers",
             "numpy", "safetensors")


def physical_cores() -> int:
    """Physical cores (hyper-threads share execution units, so intra-op threads beyond these rarely help)."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _proc_cpuinfo() -> tuple[str | None, set[str]]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None, set()
    model, flags = None, set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _macos_cpuinfo() -> tuple[str | None, set[str]]:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = sysctl("machdep.cpu.brand_string") or None
    features = f"{sysctl('machdep.cpu.features')} {sysctl('machdep.cpu.leaf7_features')}".lower()
    # sysctl spells AVX-512 VNNI as "avx512vnni"; normalise to the Linux names used above.
    flags = {f.replace("avx512vnni", "avx512_vnni").replace("avx2.0", "avx2") for f in features.split()}
    return model, flags


def cpu_facts() -> dict:
    if sys.platform.startswith("linux"):
        model, flags = _proc_cpuinfo()
    elif sys.platform == "darwin":
        model, flags = _macos_cpuinfo()
    else:
        model, flags = None, set()
    known = bool(flags)
    return {
        "model": model or platform.processor() or "unknown",
        "architecture": platform.machine(),
        "physical_cores": physical_cores(),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        # None (not False) where the OS does not tell us, so that "unknown" is never read as "absent".
        "flags": {flag: (flag in flags) if known else None for flag in CPU_FLAGS_OF_INTEREST},
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_facts() -> dict | None:
    """The GPU PyTorch sees, if any (imported lazily: torch is heavy)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda, "count": torch.cuda.device_count()}


def machine_facts() -> dict:
    try:
        import onnxruntime

        ort_providers = onnxruntime.get_available_providers()
    except ImportError:
        ort_providers = []
    return {
        "cpu": cpu_facts(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "onnxruntime_providers": ort_providers,
        "gpu": gpu_facts(),
        # Load on the machine while we measured: other processes make latency noisy, so say so.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "environment": {name: os.environ.get(name) for name in
                        ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")},
    }


def cpu_summary(facts: dict) -> str:
    """One line for the report header: 'AMD EPYC, 2 physical cores, AVX2 AVX-512 VNNI'."""
    cpu = facts["cpu"]
    flags = cpu["flags"]
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX512-BF16", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}
    present = [label for flag, label in names.items() if flags.get(flag)]
    if all(value is None for value in flags.values()):
        present = ["CPU flags unknown"]
    return f"{cpu['model']}, {cpu['physical_cores']} physical cores, {' '.join(present) or 'no AVX2'}"
