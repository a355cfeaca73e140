"""The torch module the ONNX exporter traces: a classifier's logits from the graph inputs, given positionally."""

from __future__ import annotations

from typing import Any, Sequence


def logits_module(model: Any, input_names: Sequence[str]):
    """A torch module taking the graph inputs positionally and returning `model`'s logits only. `model` is
    called with the inputs by name and `return_dict=True`, and answers with an object that has `.logits`.
    It sits at `.model`, so ONNX node names start with /model/."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(input_names, inputs, strict=True)), return_dict=True).logits

    # Eval mode on the wrapper too: the exporter switches the top module's mode, and a wrapper
    # left in training mode bakes dropout into the graph.
    return LogitsOnly().eval()
