"""Optimum's own CPU path, run inside benchmarks/.venv-optimum by export_vs_optimum.py.

    python optimum_export.py MODEL_DIR OUT_DIR
    python optimum_export.py --load ONNX_DIR     # can Optimum load a kdcompress output folder?

Writes OUT_DIR/export (plain export), OUT_DIR/optimized (ORTOptimizer, O2) and OUT_DIR/quantized
(ORTQuantizer, AutoQuantizationConfig.avx2 dynamic: the configuration Optimum's docs pick for
x86 CPUs) and prints one JSON line with the file paths and versions. This is the path a user
would take instead of kdcompress, so it uses Optimum's defaults and nothing of ours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(model_dir: str, out_dir: str) -> None:
    import importlib.metadata as md

    import onnx
    import optimum.onnxruntime.quantization as optimum_quantization
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    # The one change to Optimum's path: ORT's quantizer cannot type the outputs of the fused
    # contrib ops (Attention, SkipLayerNormalization) and stops with "Unable to find data type",
    # and ORTQuantizer offers no way to pass ORT's `DefaultTensorType` fix. Without it the
    # O2 + avx2 path users would pick does not run at all with onnxruntime 1.32.
    original_factory = optimum_quantization.ONNXQuantizer

    def quantizer_with_default_tensor_type(*args, extra_options=None, **kwargs):
        extra_options = dict(extra_options or {}, DefaultTensorType=onnx.TensorProto.FLOAT)
        return original_factory(*args, extra_options=extra_options, **kwargs)

    optimum_quantization.ONNXQuantizer = quantizer_with_default_tensor_type

    out = Path(out_dir)
    model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    model.save_pretrained(out / "export")

    optimizer = ORTOptimizer.from_pretrained(model)
    optimizer.optimize(save_dir=out / "optimized", optimization_config=AutoOptimizationConfig.O2())

    quantizer = ORTQuantizer.from_pretrained(out / "optimized", file_name="model_optimized.onnx")
    quantizer.quantize(save_dir=out / "quantized",
                       quantization_config=AutoQuantizationConfig.avx2(is_static=False))

    versions = {name: md.version(name) for name in ("optimum", "optimum-onnx", "transformers", "torch", "onnxruntime")}
    print(json.dumps({
        "export": str(out / "export" / "model.onnx"),
        "optimized": str(out / "optimized" / "model_optimized.onnx"),
        "quantized": str(out / "quantized" / "model_optimized_quantized.onnx"),
        "versions": versions,
    }))


def load(onnx_dir: str) -> None:
    """Load a kdcompress export with ORTModelForSequenceClassification and classify one sentence."""
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    model = ORTModelForSequenceClassification.from_pretrained(onnx_dir)
    tokenizer = AutoTokenizer.from_pretrained(onnx_dir)
    logits = model(**tokenizer(["Der Zug kam pünktlich an."], return_tensors="pt")).logits
    label = model.config.id2label[int(logits.argmax(-1)[0])]
    print(f"ok: inputs {sorted(model.input_names)}, logits {tuple(logits.shape)}, label {label!r}")


if __name__ == "__main__":
    if sys.argv[1] == "--load":
        load(sys.argv[2])
    else:
        main(*sys.argv[1:3])
