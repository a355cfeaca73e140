#!/usr/bin/env bash
# Build the separate virtual environment that benchmarks/export_vs_optimum.py drives Optimum from.
#
# Optimum's ONNX exporter (optimum-onnx 0.1.0) pins transformers<4.58, which cannot live beside
# kdcompress's transformers 5, so it gets its own environment. The benchmark only runs Optimum's
# export / ORTOptimizer / ORTQuantizer there; all timing happens in the main environment.
#
#   bash benchmarks/setup_optimum_env.sh            # -> benchmarks/.venv-optimum
#   OPTIMUM_VENV=/elsewhere bash benchmarks/setup_optimum_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OPTIMUM_VENV:-$here/.venv-optimum}"
python="${PYTHON:-python3.11}"
optimum_onnx_version="${OPTIMUM_ONNX_VERSION:-0.1.0}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import optimum.onnxruntime" 2>/dev/null; then
  echo "Optimum environment ready at $venv"
  exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# torch first and pinned: an unpinned resolve would fetch a multi-GB CUDA build.
"$venv/bin/pip" install --quiet "torch==2.13.0"
# Re-state the torch pin so the resolver can never swap it for another build.
"$venv/bin/pip" install --quiet "torch==2.13.0" "optimum-onnx[onnxruntime]==${optimum_onnx_version}"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
echo "Optimum environment ready at $venv"
