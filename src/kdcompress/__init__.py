"""kdcompress: knowledge distillation, ONNX export and CPU benchmarks for multilingual encoders.

The public API mirrors the CLI: `run_compress`, `distill`, `finetune_teacher`, `import_teacher`, `export_onnx`,
`run_bench`, `run_experiment`, each taking its command's settings dataclass or keyword arguments that build it.
They are imported lazily so that `import kdcompress` (and `kdcompress --help`) stays fast.
"""

from kdcompress.lazy import lazy_attributes

__version__ = "0.1.0"

_API = {
    "run_compress": "kdcompress.compress",
    "CompressConfig": "kdcompress.compress.config",
    "distill": "kdcompress.training.distill",
    "finetune_teacher": "kdcompress.training.distill",
    "DistillConfig": "kdcompress.training.config",
    "DistillResult": "kdcompress.training.distill",
    "import_teacher": "kdcompress.importers",
    "build_corpus": "kdcompress.data.corpus_builder",
    "CorpusConfig": "kdcompress.data.corpus_builder",
    "export_onnx": "kdcompress.deploy.export",
    "ExportConfig": "kdcompress.deploy.config",
    "predict_file": "kdcompress.runtime.predict",
    "PredictConfig": "kdcompress.runtime.predict",
    "Predictor": "kdcompress.runtime.predictor",
    "run_bench": "kdcompress.bench.run",
    "BenchConfig": "kdcompress.bench.config",
    "run_experiment": "kdcompress.experiment",
    "ExperimentConfig": "kdcompress.experiment.config",
    "KDCompressError": "kdcompress.errors",
}

__all__ = list(_API)

__getattr__ = lazy_attributes(__name__, _API)
