"""`experiment`: the paper's question on your own teacher, task and languages, answered in one report.

Teacher -> fine-tuned teacher -> one student per strategy and seed -> int8 ONNX -> bench -> summary.
"""

from kdcompress.experiment.run import run_experiment
from kdcompress.experiment.status import experiment_status

__all__ = ["experiment_status", "run_experiment"]
