"""Did every step leave its loss plateau? The training loss of each step, read from its own record (distill.json).

Arms are only worth comparing once each has trained past the flat start of its loss curve (on XNLI a short run
can sit at ln 3, a uniform guess over three labels, for hundreds of steps). The report shows each step's first
seed: a table of where its loss started and ended, and a plot of the curves, one panel per training stage.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from kdcompress.experiment.compute import step_record

# The share of a stage's logged steps averaged for its start and end loss: single steps are noisy at batch 16.
_EDGE_SHARE = 0.1


def _num_labels(model_dir: str | Path) -> int | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = config.get("id2label")
    return len(labels) if labels else None


def _edge_mean(losses: list[float], *, start: bool) -> float:
    width = max(1, math.ceil(len(losses) * _EDGE_SHARE))
    edge = losses[:width] if start else losses[-width:]
    return sum(edge) / len(edge)


def training_losses(steps: dict[str, list[str]]) -> list[dict]:
    """One row per (step group, training stage) of each group's first model dir: steps, start and end loss (mean of
    the first and last tenth of the logged steps) and the curve itself, for the table, the JSON and the plot."""
    rows = []
    for name, dirs in steps.items():
        record = step_record(dirs[0]) if dirs else None
        if not record:
            continue
        labels = _num_labels(dirs[0])
        for stage in record.get("stages", []):
            curve = [[point["step"], point["loss"]] for point in stage.get("history", []) if "loss" in point]
            if not curve:
                continue
            losses = [loss for _, loss in curve]
            rows.append({"step": name, "stage": stage["name"], "steps": stage.get("steps", len(losses)),
                         "start": _edge_mean(losses, start=True), "end": _edge_mean(losses, start=False),
                         "uniform_guess": math.log(labels) if labels and stage["name"] in ("teacher", "student")
                         else None,
                         "curve": curve})
    return rows


def render_losses(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Training loss: did every step leave its plateau?", "",
             "Each step's first seed, from its distill.json. Start and end: the mean loss over the first and last "
             "tenth of the stage's steps. ln K is the loss of a uniform guess over the task's K labels (for the "
             "classification stages; a KD loss against soft labels bottoms out above zero).", "",
             "| step | stage | steps | loss at start | loss at end | change | ln K |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        change = (row["end"] - row["start"]) / row["start"] if row["start"] else 0.0
        guess = f"{row['uniform_guess']:.3f}" if row["uniform_guess"] is not None else "–"
        lines.append(f"| {row['step']} | {row['stage']} | {row['steps']} | {row['start']:.3f} | {row['end']:.3f} | "
                     f"{100 * change:+.0f}% | {guess} |")
    lines += ["", "![training loss per stage](training_loss.png)"]
    return lines


def plot_losses(path: Path, rows: list[dict]) -> None:
    """One panel per stage kind; curves smoothed by a moving average of a twentieth of the stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(row["stage"] for row in rows))
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for axis, stage in zip(axes[0], stages):
        guesses = set()
        for row in (r for r in rows if r["stage"] == stage):
            x, y = zip(*row["curve"])
            window = max(1, len(y) // 20)
            smoothed = [statistics.fmean(y[max(0, i - window + 1):i + 1]) for i in range(len(y))]
            axis.plot(x, smoothed, label=row["step"], linewidth=1.2)
            if row["uniform_guess"] is not None:
                guesses.add(row["uniform_guess"])
        for guess in guesses:
            axis.axhline(guess, color="grey", linestyle="--", linewidth=0.8, label=f"ln K = {guess:.3f}")
        axis.set_title(f"stage: {stage}")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("training loss (moving average)")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
