"""Feed an ONNX Runtime session exactly the inputs its graph declares.

XLM-R-vocabulary BERTs (multilingual-e5, Multilingual-MiniLM) are exported without
`token_type_ids`, while mBERT-style models take it: the graph, not the tokenizer, decides.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kdcompress.errors import KDCompressError


def onnx_feed(session: Any, encoded: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Select and convert the tokenizer outputs that `session` expects (int64 arrays)."""
    feed = {}
    for graph_input in session.get_inputs():
        name = graph_input.name
        if name in encoded:
            feed[name] = np.asarray(encoded[name], dtype=np.int64)
        elif name == "token_type_ids":  # a tokenizer that omits them means "all segment 0"
            feed[name] = np.zeros_like(np.asarray(encoded["input_ids"]), dtype=np.int64)
        else:
            raise KDCompressError(
                f"the ONNX model needs input {name!r}, which the tokenizer does not produce; "
                "re-export the model with `kdcompress export-onnx`"
            )
    return feed
