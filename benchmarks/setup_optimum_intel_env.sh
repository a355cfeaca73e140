#!/usr/bin/env bash
# Build the separate virtual environment benchmarks/runtimes.py drives optimum-intel from.
#
# optimum-intel 2.x pins an older transformers (it would downgrade kdcompress's transformers 5)
# and, unpinned, pulls a CUDA torch; so it gets its own environment with the CPU torch installed
# first. Only its export + OVQuantizer run there; the timing happens in the main environment.
#
#   bash benchmarks/setup_optimum_intel_env.sh          # -> benchmarks/.venv-optimum-intel
#   OPTIMUM_INTEL_VENV=/elsewhere bash benchmarks/setup_optimum_intel_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OPTIMUM_INTEL_VENV:-$here/.venv-optimum-intel}"
python="${PYTHON:-python3.11}"
version="${OPTIMUM_INTEL_VERSION:-2.2.0}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import optimum.intel.openvino" 2>/dev/null; then
  echo "optimum-intel environment ready at $venv"
  exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "torch==2.13.0"
"$venv/bin/pip" install --quiet "torch==2.13.0" "optimum-intel[openvino]==${version}" datasets
# optimum-intel pulls a torchvision built for another torch ("operator torchvision::nms does not exist"),
# which breaks `transformers.AutoProcessor` and with it `import optimum.intel`; text models need none.
"$venv/bin/pip" uninstall --yes --quiet torchvision || true
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "optimum", "optimum-intel", "openvino", "nncf"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
echo "optimum-intel environment ready at $venv"
