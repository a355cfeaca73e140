"""benchmarks/avx2_only/run: a command under it sees an AVX2-only CPU, through CPUID and /proc/cpuinfo alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "avx2_only" / "run"

PROBE = """
import json, openvino as ov, torch
from kdcompress.machine import cpu_facts
from kdcompress.deploy.int8_scheme import choose_int8_scheme, detect_cpu_features
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability(),
                  "openvino": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
                  "facts": cpu_facts(), "ort_scheme_reduce_range": choose_int8_scheme(detect_cpu_features()).reduce_range}))
"""


def _why_not_here() -> str | None:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    if "cpuid_fault" not in flags.split():
        return "this CPU or kernel cannot fault on CPUID (no cpuid_fault flag)"
    if "avx512f" not in flags.split():
        return "this CPU has no AVX-512: nothing to mask"
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    probe = subprocess.run(["unshare", "--mount", "true"] if os.getuid() == 0 else
                           ["unshare", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode:
        return "mount namespaces are not allowed here (unshare failed)"
    return None


def _run(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), CPUID_MASK_STATS="1")
    return subprocess.run([str(RUN), *command], capture_output=True, text=True, env=env, timeout=300)


def test_every_runtime_sees_an_avx2_only_cpu(tmp_path):
    why = _why_not_here()
    if why:
        pytest.skip(why)
    done = _run(tmp_path, sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["torch"] == "AVX2"
    assert "BF16" not in seen["openvino"] and "FP32" in seen["openvino"]
    flags = seen["facts"]["flags"]
    assert flags["avx2"] and flags["fma"]
    assert not any(flags[name] for name in ("avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                            "amx_tile", "amx_int8"))
    assert "emulated AVX2-only" in seen["facts"]["model"]  # every recorded figure names the emulation
    assert seen["ort_scheme_reduce_range"] is True  # kdcompress's own int8 choice follows: no VNNI
    assert "CPUID instructions answered" in done.stderr  # the mask did the answering, not the real CPU


def test_the_real_cpu_is_untouched_outside(tmp_path):
    why = _why_not_here()
    if why:
        pytest.skip(why)
    assert _run(tmp_path, "true").returncode == 0
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    assert "avx512f" in flags.split()  # the bind mount stayed in the command's own mount namespace


def test_no_command_is_a_one_line_error(tmp_path):
    done = subprocess.run([str(RUN)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "avx2_only: no command given; usage: benchmarks/avx2_only/run COMMAND [ARG ...]"
