"""Stop a training stage whose loss or weights turned inf or NaN, before they reach a checkpoint or an output.

A diverging run (a learning rate too high for the model, fp16 overflow, a bad loss weight) would otherwise train
on, publish NaN weights and report "student written". The loop calls `check_loss` at every optimizer step and
`check_weights` before every checkpoint, so the last checkpoint in `OUT.partial/` is always a finite one.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator

import torch

from kdcompress.errors import KDCompressError

_LIKELY_CAUSE = ("likely a learning rate too high for this model or a float16 overflow: lower the stage's learning "
                 "rate or loss weights, or pass --mixed-precision no")


def _refuse(stage: str, step: int, what: str, last_checkpoint: int) -> KDCompressError:
    kept = (f"the last finite checkpoint (step {last_checkpoint}) is kept, so --resume continues from it"
            if last_checkpoint else "no checkpoint was written, so the corrected command simply runs")
    return KDCompressError(f"stage {stage}: the {what} turned non-finite at step {step} ({_LIKELY_CAUSE}); "
                           f"nothing was published and {kept}")


def check_loss(loss: float, *, stage: str, step: int, last_checkpoint: int) -> None:
    """Raise one line when the (process-averaged) loss of an optimizer step is inf or NaN."""
    if not math.isfinite(loss):
        raise _refuse(stage, step, "loss", last_checkpoint)


def check_weights(modules: Iterable[torch.nn.Module], *, stage: str, step: int, last_checkpoint: int) -> None:
    """Raise one line when any trained weight is inf or NaN (a finite loss can still end in an update to inf)."""
    for module in modules:
        for parameter in module.parameters():
            if not bool(torch.isfinite(parameter.detach()).all()):
                raise _refuse(stage, step, "weights", last_checkpoint)


@contextlib.contextmanager
def overflow_guard(*, stage: str, step: int, last_checkpoint: int) -> Iterator[None]:
    """An optimizer update that overflows float32 (torch raises "value cannot be converted ... without overflow")
    is the same fault as a non-finite loss: one line, not a traceback."""
    try:
        yield
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        raise _refuse(stage, step, "update", last_checkpoint) from None
