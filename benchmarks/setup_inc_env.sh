#!/usr/bin/env bash
# The environment benchmarks/runtimes.py --inc runs in: the main .venv plus Intel Neural Compressor 3.x.
#
# neural-compressor[pt] 3.10 installs beside kdcompress without changing a version, but on torch >= 2.11 its
# PT2E path needs torchao, and with torchao installed transformers imports it in every process (it prints
# "Failed to load .../torchao/_C_*.so" on stderr for each command). So neither goes into .venv: this venv sees
# .venv's packages through a .pth file and adds only neural-compressor[pt] and torchao on top.
#
#   bash benchmarks/setup_inc_env.sh             # -> benchmarks/.venv-inc
#   INC_VENV=/elsewhere bash benchmarks/setup_inc_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${INC_VENV:-$here/.venv-inc}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import neural_compressor.torch" 2>/dev/null; then
  echo "Neural Compressor environment ready at $venv"
  exit 0
fi

source "$here/peer_venv.sh"
make_peer_venv "$venv" "$root/.venv"
"$venv/bin/pip" install --quiet "neural-compressor[pt]==${INC_VERSION:-3.10}"
"$venv/bin/python" -c "import importlib.metadata as md; print({n: md.version(n) for n in ('neural-compressor', 'torchao', 'torch', 'transformers')})"
echo "Neural Compressor environment ready at $venv"
