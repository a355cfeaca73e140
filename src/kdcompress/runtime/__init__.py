"""Serve an exported directory with only onnxruntime (or openvino), tokenizers and numpy.

    from kdcompress.runtime import Predictor
    predictor = Predictor("runs/student-int8", threads=2)
    for p in predictor.predict(["Where is the station?"]):
        print(p.label, p.score)

Nothing here imports torch or transformers: a server process pays for the model file, not for
the training stack. Names are imported lazily so that `from kdcompress.runtime import Predictor`
loads only the predictor and its two runtimes' Python packages.
"""

from kdcompress.lazy import lazy_attributes

_API = {
    "Predictor": "kdcompress.runtime.predictor",
    "Prediction": "kdcompress.runtime.predictor",
    "RUNTIMES": "kdcompress.runtime.registry",
    "Runtime": "kdcompress.runtime.registry",
    "get_runtime": "kdcompress.runtime.registry",
    "available_runtimes": "kdcompress.runtime.registry",
    "register_runtime": "kdcompress.runtime.registry",
    "import_openvino": "kdcompress.runtime.backends",
    "InputRow": "kdcompress.runtime.inputs",
    "BadRow": "kdcompress.runtime.inputs",
    "read_inputs": "kdcompress.runtime.inputs",
    "PredictConfig": "kdcompress.runtime.predict",
    "PredictResult": "kdcompress.runtime.predict",
    "predict_file": "kdcompress.runtime.predict",
}

__all__ = list(_API)

__getattr__ = lazy_attributes(__name__, _API)
