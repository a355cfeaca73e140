"""Silence library chatter (load reports, tqdm bars, root-logger hints) so our own rich progress and tables
stay readable: `quiet_libraries()` for a whole command, the context managers for one block."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Hide root-logger records below ERROR and all warnings for one block (onnxruntime's quantizer and
    optimizer log pre-processing hints and every fusion attempt there)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def quiet_block() -> Iterator[None]:
    """`quiet_logging()` plus transformers' notices and progress bars, restored afterwards (tracer
    warnings, load reports)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with quiet_logging():
            yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
