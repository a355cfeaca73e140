#!/usr/bin/env bash
# The same `kdcompress distill` on one GPU: does the Accelerate path run there, and what does it cost?
# Random-weight teachers with mBERT's real vocabulary (no accuracy claims): a tiny one and one of
# mBERT-base's shape. Run from the repository root with DATA pointing at a folder laid out like
# shared/data (sib200/ and models/ are enough) and OUT at a results folder:
#   DATA=../shared/data OUT=/tmp/gpu bash benchmarks/gpu_distill_check.sh
set -euo pipefail
export PYTHONPATH=src HF_HUB_OFFLINE=1 KDCOMPRESS_DATA_DIR="$DATA" TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
python3 - "$DATA" "$OUT" <<'PY'
import sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoTokenizer, BertConfig, BertForMaskedLM
data, out = Path(sys.argv[1]), Path(sys.argv[2])
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
vocab = data / "models" / "bert-base-multilingual-cased"
tok = AutoTokenizer.from_pretrained(vocab)
shapes = {"tiny": BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                             intermediate_size=128),
          "mbert-shape": AutoConfig.from_pretrained(vocab)}
for name, config in shapes.items():
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out / f"teacher-{name}")
    tok.save_pretrained(out / f"teacher-{name}")
PY
for shape in tiny mbert-shape; do
  for strategy in both finetune; do
    start=$(date +%s.%N)
    python3 -m kdcompress distill --teacher "$OUT/teacher-$shape" --task sib200 --target-langs de,sw,zh \
      --strategy "$strategy" --student-layers 2 --max-steps 40 --batch-size 32 --max-length 128 \
      --corpus-max-sentences 2000 --eval-limit 50 --out "$OUT/student-$shape-$strategy"
    end=$(date +%s.%N)
    python3 - "$OUT/student-$shape-$strategy/distill.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
stages = {s["name"]: (s["steps"], s["wall_seconds"], s["settings"]["mixed_precision"], round(s["history"][-1]["loss"], 4))
          for s in r["stages"]}
print(sys.argv[1], "wall", round(float(sys.argv[3]) - float(sys.argv[2]), 1), "s; stages (steps, s, precision, last loss):",
      stages, "dev:", round(r["dev_accuracy"]["source"], 3))
PY
  done
done
ls "$OUT"
