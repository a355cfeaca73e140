"""Load a sequence classifier whose weights must all be there: the one rule for every command that loads one.

transformers fills weights it does not find (a config.json whose model_type does not match the weights, a missing
head) with random values and only logs it; the numbers that follow would be a random model's. Here any weight the
model needs and the file lacks is one line naming the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdcompress.errors import KDCompressError, describe


def load_complete_classifier(path: str | Path, *, what: str = "model", **kwargs: Any) -> Any:
    """AutoModelForSequenceClassification.from_pretrained(path, **kwargs), refused when weights are missing."""
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - corrupt weights, unknown model_type, shape mismatches: one line
        raise KDCompressError(f"the {what} in {path} does not load ({describe(exc)}); check that it is a "
                              "sequence-classification model directory") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise KDCompressError(f"the weights in {path} lack {len(missing)} of the {what}'s weights (e.g. {missing[0]}): "
                              "config.json does not describe these weights (another model_type or size?) or the "
                              "classifier head is missing; re-save the model with save_pretrained")
    return model
