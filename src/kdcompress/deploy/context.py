"""The state every `export-onnx` stage shares, as one object instead of a dozen parameters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.deploy.check_data import CheckData
from kdcompress.deploy.config import ExportConfig
from kdcompress.deploy.model_dir import SourceModel
from kdcompress.deploy.progress import Progress


@dataclass(frozen=True)
class ExportRun:
    """One export in progress: its settings, the loaded model, the data choice, a scratch folder for
    intermediate graphs, the progress display and export.json's content as the stages fill it in."""

    config: ExportConfig
    source: SourceModel
    data: CheckData
    work: Path
    ui: Progress
    report: dict[str, Any]
