"""Every setting of `bench`, as one dataclass: the CLI, the `[bench]` TOML table and the API build it."""

from __future__ import annotations

from dataclasses import dataclass

from kdcompress.errors import KDCompressError
from kdcompress.runtime.registry import exported_runtimes, get_runtime
from kdcompress.settings import MIN_MAX_LENGTH, Settings, setting

DEVICES = ("cpu", "cuda")
ALL_RUNTIMES = "all"


@dataclass
class BenchConfig(Settings):
    table = "bench"

    models: dict[str, str] = setting(factory=dict, help="{NAME: model or exported directory}.", cli=False)
    task: str = setting("sib200", help="Task to measure accuracy on: sib200, xnli or pawsx.")
    out: str = setting("", help="Report folder to create (bench.json, bench.md, PNG plots).")
    source_lang: str = setting("en", help="The language the models were trained in.")
    target_langs: list[str] | None = setting(None, help="Comma-separated target languages, or 'all' "
                                             "(default: every task language but the source).")
    data_dir: str | None = setting(None, help="Local data folder laid out like shared/data "
                                   "(default: $KDCOMPRESS_DATA_DIR, else the Hugging Face hub).")
    device: str = setting("cpu", help="cpu, or cuda (PyTorch and ONNX Runtime's CUDA provider).")
    baseline: str | None = setting(None, help="Model NAME that speedups and accuracy deltas are relative to "
                                   "(default: the first --model).")
    split: str = setting("test", help="Labelled split for accuracy.")
    limit: int | None = setting(None, help="At most this many examples per language (quick runs).")
    batch_sizes: list[int] = setting(factory=lambda: [1, 8, 32], help="Latency grid: batch sizes.")
    seq_lens: list[int] = setting(factory=lambda: [32, 128], help="Latency grid: fixed sequence lengths in tokens.")
    real_lengths: bool = setting(True, help="Also time the task's own sentences with dynamic padding.")
    threads: int | None = setting(None, help="Intra-op threads for every backend (default: physical cores).")
    warmup: int = setting(3, help="Untimed calls per model and grid cell.")
    repeats: int = setting(30, help="Timed calls per model and grid cell (fewer if the time cap is hit).")
    rounds: int = setting(5, help="Interleaved rounds the repeats are split into (models round-robin).")
    max_seconds_per_cell: float = setting(3.0, help="Time cap per model and cell; slow models then get one "
                                          "call per round.")
    max_length: int | None = setting(None, help="Truncation length for accuracy and real-length latency (default: "
                                     "the length each model was trained at, from its distill.json; else 128).")
    memory: bool = setting(True, help="Measure peak memory and load time of each model in a fresh process "
                           "(exported models: a process that imports only the predictor, and its cold start).")
    runtime: str = setting("onnxruntime", help="Runtimes for exported directories: onnxruntime | openvino | all "
                           "(each exported model on every runtime asked for that can run it, rows named "
                           "NAME@RUNTIME; OpenVINO needs pip install 'kdcompress[openvino]').")
    throughput: bool = setting(True, help="Also time exported models on all the task's sentences at batch 32, "
                               "length-bucketed vs arrival order (rows/s).")
    accuracy_models: list[str] | None = setting(None, help="Models whose accuracy is measured (default: all; the "
                                                "rest are timed only, e.g. a random-weight shape that speed-ups "
                                                "are quoted against).", cli=False)
    latency_models: list[str] | None = setting(None, help="Models to time (default: all; the rest get accuracy "
                                               "only).", cli=False)
    eval_batch_size: int = setting(32, help="Sentences per call when measuring accuracy (sorted by length, "
                                   "padded per batch). A GPU wants more, e.g. 256; predictions do not depend on it.")
    sentence_hits: bool = setting(False, help="Also record, per language, whether each sentence (in file order) was "
                                  "labelled right: paired comparisons between models (compress judges per-language "
                                  "gaps against their sampling error with them).", cli=False)
    accuracy_cache: str | None = setting(None, help="Folder of accuracy results to reuse and fill: a language a "
                                         "model was measured on before, with the same model files, settings, examples "
                                         "and library versions, is read back instead of run again.")
    overwrite: bool = setting(False, help="Replace an existing --out folder.")
    quiet: bool = setting(False, help="No progress or closing table.", cli=False)
    command: str | None = setting(None, help="The command line quoted in the report.", cli=False)

    def check(self) -> "BenchConfig":
        if self.device not in DEVICES:
            raise KDCompressError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        self.runtime = self.runtime.strip().lower()
        choices = [row.name for row in exported_runtimes()] + [ALL_RUNTIMES]
        if self.runtime not in choices:
            raise KDCompressError(f"--runtime {self.runtime!r} is not one of {', '.join(choices)}")
        if self.device not in (get_runtime(self.runtime).devices if self.runtime != ALL_RUNTIMES else ("cpu",)):
            raise KDCompressError(f"--runtime {self.runtime} runs on the CPU; use --device cpu")
        if self.eval_batch_size < 1:
            raise KDCompressError(f"--eval-batch-size {self.eval_batch_size}: give a positive whole number (32 is "
                                  "the default)")
        for option, values in (("batch_sizes", self.batch_sizes), ("seq_lens", self.seq_lens)):
            if not values or any(v < 1 for v in values):
                shown = ",".join(map(str, values)) or "nothing"
                raise KDCompressError(f"--{option.replace('_', '-')} must be a list of positive whole numbers, "
                                      f"got {shown}")
        if any(v > 512 for v in self.seq_lens):
            raise KDCompressError("--seq-lens values above 512 exceed BERT-style position tables; use 512 or less")
        for option, minimum in (("limit", 1), ("threads", 1), ("warmup", 0), ("repeats", 1), ("rounds", 1),
                                ("max_length", MIN_MAX_LENGTH)):
            value = getattr(self, option)
            if value is not None and value < minimum:
                raise KDCompressError(f"--{option.replace('_', '-')} must be at least {minimum}, got {value}")
        if self.max_seconds_per_cell <= 0:
            raise KDCompressError(f"--max-seconds-per-cell must be positive, got {self.max_seconds_per_cell}")
        return self
