"""kdcompress: knowledge distillation, ONNX export and CPU benchmarks for multilingual encoders.

The public API mirrors the CLI: `distill`, `import_teacher`, `export_onnx`, `bench`.
They are imported lazily so that `import kdcompress` (and `kdcompress --help`) stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "distill": "kdcompress.training.distill",
    "finetune_teacher": "kdcompress.training.distill",
    "DistillConfig": "kdcompress.training.config",
    "import_teacher": "kdcompress.importers",
    "export_onnx": "kdcompress.deploy.export",
    "bench": "kdcompress.bench.run",
    "run_experiment": "kdcompress.experiment",
    "KDCompressError": "kdcompress.errors",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'kdcompress' has no attribute {name!r}")
