"""Lazy public names: `import kdcompress` (and `kdcompress --help`) must not pay for torch or onnxruntime."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_attributes(package: str, api: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `api[name]` (a module path) on first use of `name`."""

    def __getattr__(name: str) -> object:
        if name in api:
            return getattr(import_module(api[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
