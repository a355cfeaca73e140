"""optimum-intel's OpenVINO int8 path, run inside its own venv by benchmarks/runtimes.py.

    python optimum_intel_export.py MODEL_DIR OUT_DIR DATA_DIR

`OVModelForSequenceClassification.from_pretrained(export=True)`, then `OVQuantizer` with
`OVQuantizationConfig()` (NNCF static int8, optimum-intel's defaults) calibrated on 128 English
SIB-200 train sentences - the same calibration kdcompress's NNCF int8 uses. Prints one JSON line
with the model path and the versions.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def english_train(data_dir: Path, limit: int = 128) -> list[str]:
    path = data_dir / "sib200" / "eng_Latn" / "train.tsv"
    with path.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    return [row["text"] for row in rows[:limit]]


def main(model_dir: str, out_dir: str, data_dir: str) -> None:
    import importlib.metadata as md

    from datasets import Dataset
    from optimum.intel import OVConfig, OVModelForSequenceClassification, OVQuantizationConfig, OVQuantizer
    from transformers import AutoTokenizer

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = OVModelForSequenceClassification.from_pretrained(model_dir, export=True)
    texts = english_train(Path(data_dir))
    names = [port.get_any_name() for port in model.model.inputs]

    def encode(batch: dict) -> dict:
        encoded = dict(tokenizer(batch["text"], truncation=True, max_length=128))
        # The exported graph takes token_type_ids even where the (XLM-R) tokenizer makes none; without them
        # calibration stops in the embeddings' Add ("Eltwise shape infer ... mismatch").
        if "token_type_ids" in names and "token_type_ids" not in encoded:
            encoded["token_type_ids"] = [[0] * len(ids) for ids in encoded["input_ids"]]
        return encoded

    dataset = Dataset.from_dict({"text": texts}).map(encode, batched=True, remove_columns=["text"])
    quantizer = OVQuantizer.from_pretrained(model)
    quantizer.quantize(calibration_dataset=dataset, save_directory=out,
                       ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(texts))))
    tokenizer.save_pretrained(out)
    versions = {name: md.version(name) for name in ("optimum-intel", "optimum", "transformers", "openvino", "nncf")}
    print(json.dumps({"model": str(out / "openvino_model.xml"), "versions": versions}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
