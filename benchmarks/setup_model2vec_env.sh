#!/usr/bin/env bash
# The environment benchmarks/static_vs_model2vec.py runs model2vec in: the main .venv plus model2vec.
#
# model2vec's distill extra wants torch, transformers and scikit-learn, which the main .venv already has; letting
# pip resolve them would pull a second (multi-GB, CUDA) torch. So this venv sees .venv's packages through a .pth
# file and adds model2vec alone, without dependencies, then checks that everything model2vec.distill imports loads.
#
#   bash benchmarks/setup_model2vec_env.sh             # -> benchmarks/.venv-model2vec
#   MODEL2VEC_VENV=/elsewhere MAIN_VENV=/path/to/.venv bash benchmarks/setup_model2vec_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${MODEL2VEC_VENV:-$here/.venv-model2vec}"
main_venv="${MAIN_VENV:-$root/.venv}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import model2vec.distill" 2>/dev/null; then
  echo "model2vec environment ready at $venv"
  exit 0
fi

source "$here/peer_venv.sh"
make_peer_venv "$venv" "$main_venv"
# model2vec.distill also needs skeletoken (tokenizer data models); its own dependencies (pydantic, protobuf, regex,
# transformers) are in .venv. model2vec 0.10 asks for transformers<5.4 but distills with .venv's 5.x (checked).
"$venv/bin/pip" install --quiet --no-deps "model2vec==${MODEL2VEC_VERSION:-0.10.0}" "skeletoken==${SKELETOKEN_VERSION:-0.6.1}"
"$venv/bin/python" -c "import model2vec.distill, importlib.metadata as md; print({n: md.version(n) for n in ('model2vec', 'torch', 'transformers', 'scikit-learn')})"
echo "model2vec environment ready at $venv"
