"""What each step of an experiment cost: wall time and machine, read from the step's own record (distill.json).

An experiment that ran over several sessions only times the steps of its last invocation; the records keep
every step's time, so the report can state the compute of the whole study.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def step_record(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / "distill.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an imported or given teacher has no distill record


def _machine(record: dict) -> str:
    # made_on: a student carried from another machine (tools/device_transfer.py); records before `device` say none
    named = record.get("made_on", {}).get("device") or record.get("device")
    if named:
        return named
    return "CPU" if record.get("versions", {}).get("torch", "").endswith("+cpu") else "unrecorded"  # CPU-only build


def step_costs(steps: dict[str, list[str]]) -> list[dict]:
    """One row per step group (name -> model dirs, e.g. an arm's seeds): wall minutes (mean, min, max), machine,
    and whether a run was resumed (its time then covers the last invocation only)."""
    rows = []
    for name, dirs in steps.items():
        records = [r for r in map(step_record, dirs) if r and "wall_seconds" in r]
        if not records:
            continue
        minutes = [r["wall_seconds"] / 60 for r in records]
        rows.append({"step": name, "runs": len(records), "minutes": statistics.mean(minutes),
                     "min": min(minutes), "max": max(minutes),
                     "machine": ", ".join(sorted({_machine(r) for r in records})),
                     "resumed": sum(bool(r.get("config", {}).get("resume")) for r in records)})
    return rows


def render_costs(rows: list[dict], cores: int | None) -> list[str]:
    if not rows:
        return []
    where = f"{cores} CPU cores" if cores else "this machine"
    lines = ["", "## Compute: wall time per step", "",
             f"From each step's distill.json; CPU steps ran on {where}. A resumed run counts its last invocation only.",
             "", "| step | runs | wall time, min (mean; min-max) | machine | resumed |", "|---|---|---|---|---|"]
    for row in rows:
        spread = f" ({row['min']:.1f}-{row['max']:.1f})" if row["runs"] > 1 else ""
        lines.append(f"| {row['step']} | {row['runs']} | {row['minutes']:.1f}{spread} | {row['machine']} | "
                     f"{row['resumed'] or '–'} |")
    return lines
