"""The benchmark harness: latency and per-language accuracy of PyTorch and ONNX models, in one report.

`kdcompress.bench.run_bench(config, **overrides)` runs it; `BenchConfig` holds every setting and
`BenchResult` is what it returns. Submodules are imported lazily so that `import kdcompress.bench`
stays cheap.
"""

from kdcompress.lazy import lazy_attributes

_API = {
    "run_bench": "kdcompress.bench.run",
    "BenchResult": "kdcompress.bench.run",
    "BenchConfig": "kdcompress.bench.config",
    "load_runner": "kdcompress.bench.runners",
    "parse_model_specs": "kdcompress.bench.model_specs",
    "machine_facts": "kdcompress.machine",
    "summarize": "kdcompress.bench.latency",
}

__all__ = list(_API)

__getattr__ = lazy_attributes(__name__, _API)
