"""The frontier study's table over seeds, recomputed from the committed frontier.json of each seed.

    cd docs/results/sib200_frontier && python summarize_seeds.py s1 s2 s3 > summary.md

Accuracy: each form's test gaps to its own seed's teacher, mean ± sample standard deviation over the seeds that
measured it; the worst language is the one with the largest mean gap. Latency, size and memory: from the first
folder given (one machine, one run, side by side), since every seed shares the shapes.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def summarize(folders: list[Path]) -> str:
    runs = [json.loads((folder / "frontier.json").read_text(encoding="utf-8")) for folder in folders]
    names = [row["name"] for row in runs[0]["rows"]]
    names += [row["name"] for run in runs[1:] for row in run["rows"] if row["name"] not in names]
    teachers = [run["teacher"]["test"] for run in runs]
    lines = [f"Seeds: {', '.join(str(run['settings']['seed']) for run in runs)}. Teacher (fp32) per seed: "
             + "; ".join(f"{100 * t['source']:.1f} English / {100 * t['target_average']:.1f} target average"
                         for t in teachers) + ".", "",
             "| model | seeds | test 31-target avg | test English | gap avg | gap avg per seed | gap English | "
             "worst language (mean gap) | b1 real ms | x fp32 teacher | x mBERT-base b1x128 | file MB | "
             "peak RSS MB |", "|" + "---|" * 13]
    first = {row["name"]: row for row in runs[0]["rows"]}
    for name in names:
        rows = [row for run in runs for row in run["rows"] if row["name"] == name]
        gaps = [row["test"]["gaps"] for row in rows]
        langs = gaps[0]["per_language"]
        per_language = {lang: statistics.mean(g["per_language"][lang] for g in gaps) for lang in langs}
        worst = max(per_language, key=per_language.get)
        speed = first.get(name, {})
        latency = speed.get("latency", {})
        long_x = next((v for k, v in latency.items() if k.startswith("speedup_vs_mbert_base_b1_")
                       and "real" not in k), None)

        lines.append(" | ".join([
            f"| {name}", str(len(rows)),
            _mean_sd([100 * row["test"]["target_average"] for row in rows]),
            _mean_sd([100 * row["test"]["source"] for row in rows]),
            _mean_sd([g["target_average"] for g in gaps]),
            ", ".join(f"{g['target_average']:.1f}" for g in gaps),
            _mean_sd([g["source"] for g in gaps]),
            f"{worst} ({per_language[worst]:.1f})",
            fmt(latency.get("b1_real_ms"), "{:.2f}"), fmt(latency.get("speedup_vs_teacher_b1_real"), "{:.1f}x"),
            fmt(long_x, "{:.1f}x"), fmt(speed.get("size_mb"), "{:.0f}"), fmt(speed.get("peak_rss_mb"), "{:.0f}"),
        ]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: summarize_seeds.py FOLDER [FOLDER ...] (each holding a compress frontier.json)")
    print(summarize([Path(arg) for arg in sys.argv[1:]]), end="")
