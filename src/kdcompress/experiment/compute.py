"""What each step of an experiment cost: wall time and machine, read from the step's own record (distill.json).

An experiment that ran over several sessions only times the steps of its last invocation; the records keep
every step's time, so the report can state the compute of the whole study. A step resumed from a checkpoint adds
the training time its earlier invocations kept (`earlier_invocations_seconds`); records written before that was
kept time only their last invocation, and are counted apart.
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
        minutes = [(r["wall_seconds"] + (r.get("earlier_invocations_seconds") or 0)) / 60 for r in records]
        rows.append({"step": name, "runs": len(records), "minutes": statistics.mean(minutes),
                     "min": min(minutes), "max": max(minutes),
                     "machine": ", ".join(sorted({_machine(r) for r in records})),
                     "resumed": sum(bool(r.get("config", {}).get("resume")) for r in records),
                     "last_invocation_only": sum(_earlier_time_unknown(r) for r in records)})
    return rows


def _earlier_time_unknown(record: dict) -> bool:
    """A resumed run whose earlier invocations' time was not kept (a record or checkpoint older than that)."""
    if "earlier_invocations_seconds" in record:
        return record["earlier_invocations_seconds"] is None
    return bool(record.get("config", {}).get("resume"))


def render_costs(rows: list[dict], cores: int | None) -> list[str]:
    if not rows:
        return []
    where = f"{cores} CPU cores" if cores else "this machine"
    lines = ["", "## Compute: wall time per step", "",
             f"From each step's distill.json; CPU steps ran on {where}. A run resumed from a checkpoint adds the training "
             "time of its earlier invocations up to that checkpoint, except where the checkpoint or record predates "
             "that count (\"last invocation only\").",
             "", "| step | runs | wall time, min (mean; min-max) | machine | resumed |", "|---|---|---|---|---|"]
    for row in rows:
        spread = f" ({row['min']:.1f}-{row['max']:.1f})" if row["runs"] > 1 else ""
        unknown = row.get("last_invocation_only")
        resumed = f"{row['resumed']}" + (f" ({unknown} last invocation only)" if unknown else "")
        lines.append(f"| {row['step']} | {row['runs']} | {row['minutes']:.1f}{spread} | {row['machine']} | "
                     f"{resumed if row['resumed'] else '–'} |")
    return lines
