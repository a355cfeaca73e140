"""Loss and dev-accuracy tables of an XNLI study attempt whose benchmark did not finish, from its step records.

    cd docs/results/xnli_converged && python summarize_attempt.py device_attempt_2026-12-04b > device_attempt_2026-12-04b/summary.md

Every step's distill.json holds its loss history and its closing dev accuracy (`eval_limit` pairs a language). These
are not test results: the study's benchmark (all 5,010 test pairs of each language) is what the report quotes."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from kdcompress.experiment.loss_curves import training_losses


def _mean_sd(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def main(attempt: Path) -> None:
    students = sorted(p for p in (attempt / "students").iterdir() if (p / "distill.json").is_file())
    arms: dict[str, list[Path]] = {}
    for path in students:
        arm = path.name.rsplit("-s", 1)[0] if not path.name.startswith("general-") else "general student"
        arms.setdefault(arm, []).append(path)
    teacher = attempt / "teachers" / "finetuned"

    print(f"# {attempt.name}: training loss and dev accuracy (no test result)\n")
    print("Loss: mean of the first and last tenth of each stage's logged steps; ln 3 = 1.099 is a uniform guess.\n")
    print("| step | stage | steps | loss at start | loss at end | change |")
    print("|---|---|---|---|---|---|")
    steps = {"teacher": [str(teacher)]} | {p.name: [str(p)] for p in students}
    for row in training_losses(steps):
        change = (row["end"] - row["start"]) / row["start"]
        print(f"| {row['step']} | {row['stage']} | {row['steps']} | {row['start']:.3f} | {row['end']:.3f} | "
              f"{100 * change:+.0f}% |")

    teacher_dev = json.loads((teacher / "distill.json").read_text())["dev_accuracy"]
    limit = teacher_dev["per_language"]["en"]["n"]
    print(f"\nDev accuracy (%), {limit} pairs a language, mean ± std over seeds; gap: teacher minus arm, on the mean.\n")
    print("| model | seeds | English | 14-target average | gap: target / English |")
    print("|---|---|---|---|---|")
    print(f"| teacher (fine-tuned) | 1 | {100 * teacher_dev['source']:.1f} | "
          f"{100 * teacher_dev['target_average']:.1f} | – |")
    for arm, paths in arms.items():
        if arm == "general student":
            continue
        dev = [json.loads((p / "distill.json").read_text())["dev_accuracy"] for p in paths]
        source, targets = [d["source"] for d in dev], [d["target_average"] for d in dev]
        gap_t = 100 * (teacher_dev["target_average"] - statistics.mean(targets))
        gap_s = 100 * (teacher_dev["source"] - statistics.mean(source))
        print(f"| `{arm}` | {len(dev)} | {_mean_sd(source)} | {_mean_sd(targets)} | {gap_t:.1f} / {gap_s:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
