"""The benchmark harness: latency and per-language accuracy of PyTorch and ONNX models, in one report.

`kdcompress.bench(...)` is `kdcompress.bench.run.bench`. Because this package has the same name
as that public function, the package itself is made callable: whichever of the two
`kdcompress.bench` resolves to (it depends on import order), calling it runs the benchmark.
Submodules are imported lazily so that `import kdcompress.bench` stays cheap.
"""

import sys
import types
from importlib import import_module

_API = {
    "bench": "kdcompress.bench.run",
    "load_runner": "kdcompress.bench.runners",
    "parse_model_specs": "kdcompress.bench.run",
    "machine_facts": "kdcompress.bench.machine",
    "summarize": "kdcompress.bench.latency",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'kdcompress.bench' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from kdcompress.bench.run import bench

        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
