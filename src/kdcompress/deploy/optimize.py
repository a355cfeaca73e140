"""Transformer operator fusion (`--optimize`) with ONNX Runtime's BERT optimizer.

ORT's `optimize_model` rewrites the exported graph into its fused contrib operators
(Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization). We run only those
Python-level fusions (`opt_level=0`), not ORT's session-level graph optimizations, so the
saved graph stays portable: every session applies its own hardware-specific rewrites at load.

Fused graphs turn the attention mask into ORT's `mask_index` (the count of ones per row),
which assumes right padding - what every tokenizer we export does by default.
"""

from __future__ import annotations

from pathlib import Path

from kdcompress.quiet import quiet_logging


def expected_fusions(num_layers: int, *, cls_only_last_layer: bool = False) -> dict[str, int]:
    """The fused operators a BERT encoder of `num_layers` layers should get. A last layer computed for [CLS]
    only (cls_only.py) has no whole-sequence Attention to fuse; its layer norms and GELU still fuse."""
    return {"EmbedLayerNormalization": 1, "Attention": num_layers - int(cls_only_last_layer),
            "SkipLayerNormalization": 2 * num_layers, "BiasGelu": num_layers}


def fuse_transformer_ops(src: Path, dst: Path, *, num_heads: int, hidden_size: int, num_layers: int,
                         cls_only_last_layer: bool = False) -> dict:
    """Fuse `src` into `dst`; return which fusions happened and which expected ones did not."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # Exact erf GELU: the tanh approximation would break the 1e-4 fp32 parity check.
    options.enable_gelu_approximation = False
    with quiet_logging():  # the optimizer logs every fusion attempt at WARNING/INFO level
        model = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               optimization_options=options, opt_level=0, use_gpu=False)
        stats = model.get_fused_operator_statistics()
        model.save_model_to_file(str(dst))
    happened = {name: int(count) for name, count in stats.items() if count}
    expected = expected_fusions(num_layers, cls_only_last_layer=cls_only_last_layer)
    missing = {name: {"expected": want, "found": happened.get(name, 0)}
               for name, want in expected.items() if happened.get(name, 0) < want}
    return {"fused": happened, "expected": expected, "missing": missing,
            "tool": "onnxruntime.transformers.optimizer.optimize_model(model_type='bert', opt_level=0)"}
