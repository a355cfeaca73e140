"""Which benchmarked models run the same computation: the same format, runtime, precision and shape.

The students of one experiment's arms and seeds share a shape, so their latency differences are timing noise: a
report that ranks them by it crowned a model (`none-s1`, 0.2 ms ahead of three students of its shape on the XNLI
study) that was neither faster nor as accurate as the others.
"""

from __future__ import annotations

import statistics
from typing import Mapping

# Models alike in all of these run the same computation at a given cell.
SAME_COMPUTATION = ("format", "runtime", "exported_for", "precision", "inference_precision", "quantization",
                    "quantization_scheme", "int8_control", "optimized", "model_type", "layers", "hidden_size",
                    "intermediate_size", "vocab_size", "parameters", "intra_op_threads")


def computation_key(model: Mapping) -> tuple | None:
    """What `model` computes, to compare with others' by ==; None where its shape is not recorded: its layers,
    width, and its feed-forward width or parameter count (reports written before the feed-forward width was
    recorded have the parameter count of PyTorch models only)."""
    if model.get("layers") is None or model.get("hidden_size") is None:
        return None
    if model.get("intermediate_size") is None and model.get("parameters") is None:
        return None
    return tuple(model.get(field) for field in SAME_COMPUTATION)


def alike(name: str, candidates, models: Mapping[str, Mapping]) -> list[str]:
    """The names among `candidates` that run `name`'s computation, `name` included ([name] where unknown)."""
    key = computation_key(models.get(name, {}))
    if key is None:
        return [name]
    return [other for other in candidates if other == name or computation_key(models.get(other, {})) == key]


def shared_latency(latency_ms: Mapping[str, float], models: Mapping[str, Mapping]) -> dict[str, float]:
    """Each model's latency for ranking: the median over the models that run its computation (its own where none
    other does), so that noise does not order models that cannot differ in speed."""
    return {name: statistics.median(latency_ms[other] for other in alike(name, latency_ms, models))
            for name in latency_ms}
