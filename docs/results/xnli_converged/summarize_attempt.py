"""Loss, dev- and test-accuracy tables of an XNLI study attempt whose benchmark did not finish, from what came back.

    cd docs/results/xnli_converged && python summarize_attempt.py device_attempt_2026-12-04b > device_attempt_2026-12-04b/summary.md

Every step's distill.json holds its loss history and its closing dev accuracy (`eval_limit` pairs a language): not
test results. Test accuracy is read from the attempt's `accuracy-cache/` where it has one (each model measured on
the test split as soon as it was trained; bench/accuracy_cache.py), and the paper's claims are judged on it as the
experiment's report would judge them; models missing a language there are listed and left out."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from kdcompress.bench.accuracy import summarize_languages
from kdcompress.experiment.loss_curves import training_losses
from kdcompress.experiment.report import render_claims
from kdcompress.experiment.summary import ModelRef, aggregate, assess_claims


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

    tested = (attempt / "accuracy-cache").is_dir()
    print(f"# {attempt.name}: training loss, dev accuracy{', test accuracy' if tested else ' (no test result)'}\n")
    print("Loss: mean of the first and last tenth of each stage's logged steps; ln 3 = 1.099 is a uniform guess.\n")
    print("| step | stage | steps | loss at start | loss at end | change |")
    print("|---|---|---|---|---|---|")
    steps = {"teacher": [str(teacher)]} | {p.name: [str(p)] for p in students}
    for row in training_losses(steps):
        change = (row["end"] - row["start"]) / row["start"]
        print(f"| {row['step']} | {row['stage']} | {row['steps']} | {row['start']:.3f} | {row['end']:.3f} | "
              f"{100 * change:+.0f}% |")

    teacher_record = json.loads((teacher / "distill.json").read_text())
    if "dev_accuracy" in teacher_record:
        _dev_table(teacher_record["dev_accuracy"], arms)
    if tested:
        task = teacher_record["config"]
        _test_section(attempt / "accuracy-cache", task["source_lang"], task["target_langs"])


def _test_section(cache: Path, source: str, targets: list[str]) -> None:
    measured: dict[str, dict] = {}
    for path in sorted(cache.glob("*.json")):
        entry = json.loads(path.read_text())
        name = Path(entry["model_dir"]).name
        measured.setdefault("teacher" if name == "finetuned" else name, {})[entry["lang"]] = entry["result"]
    langs = {source, *targets}
    complete = {name: per_lang for name, per_lang in measured.items() if set(per_lang) >= langs}
    accuracy = {name: summarize_languages({lang: per_lang[lang] for lang in langs}, source, targets)
                for name, per_lang in complete.items()}
    refs = [ModelRef(name, "teacher", None, "pytorch") if name == "teacher"
            else ModelRef(name, name.rsplit("-s", 1)[0], int(name.rsplit("-s", 1)[1]), "pytorch")
            for name in accuracy]
    summary = aggregate(refs, accuracy, {}, source_lang=source)
    sizes = {row["n"] for per_lang in complete.values() for row in per_lang.values()}
    print(f"\nTest accuracy (%), {', '.join(map(str, sorted(sizes)))} pairs a language, mean ± std over seeds, from "
          "the accuracy cache; gap: teacher minus arm, on the mean.\n")
    if set(measured) - set(complete):
        print(f"Left out, some languages unmeasured: {', '.join(sorted(set(measured) - set(complete)))}.\n")
    print("| model | seeds | English | target average | gap: target / English | worst target (gap) |")
    print("|---|---|---|---|---|---|")
    teacher = summary.get("teacher/pytorch")
    for key, row in sorted(summary.items(), key=lambda item: _table_position(item[1]["group"])):
        values = lambda part: _mean_sd(row[part]["values"])  # noqa: E731
        gap = worst = "–"
        if teacher and key != "teacher/pytorch":
            gap = (f"{100 * (teacher['target_average']['mean'] - row['target_average']['mean']):.1f} / "
                   f"{100 * (teacher['source']['mean'] - row['source']['mean']):.1f}")
            lang, points = max(((lang, teacher["per_language"][lang]["mean"] - stat["mean"])
                                for lang, stat in row["per_language"].items() if lang != source),
                               key=lambda item: item[1])
            worst = f"{lang} ({100 * points:.1f})"
        print(f"| {row['group']} | {len(row['seeds'])} | {values('source')} | {values('target_average')} | "
              f"{gap} | {worst} |")
    _per_model_table(accuracy)
    _paired_table(complete, accuracy, targets)
    claims = assess_claims(summary, transfer_arms=tuple(r["group"] for r in summary.values()
                                                        if r["group"].startswith("transfer")))
    print("\n".join(render_claims(claims)).replace("on these numbers", "on these test numbers"))


def _per_model_table(accuracy: dict[str, dict]) -> None:
    """Each model on its own (the seeds behind the means above)."""
    teacher = accuracy.get("teacher")
    print("\nEach model (%, two decimals); gap: teacher minus model.\n")
    print("| model | English | target average | gap: target / English | worst target (gap) |")
    print("|---|---|---|---|---|")
    for name in sorted(accuracy, key=lambda name: (_table_position(name.rsplit("-s", 1)[0]), name)):
        row = accuracy[name]
        gap = worst = "–"
        if teacher and name != "teacher":
            gap = (f"{100 * (teacher['target_average'] - row['target_average']):.2f} / "
                   f"{100 * (teacher['source'] - row['source']):.2f}")
            lang = max(row["targets"], key=lambda lang: teacher["targets"][lang] - row["targets"][lang])
            worst = f"{lang} ({100 * (teacher['targets'][lang] - row['targets'][lang]):.2f})"
        print(f"| {name} | {100 * row['source']:.2f} | {100 * row['target_average']:.2f} | {gap} | {worst} |")


# The comparisons the paper's claims 1 and 2 make, one seed at a time
_PAIRS = (("pretrain", "finetune"), ("finetune", "none"))


def _paired_table(complete: dict[str, dict], accuracy: dict[str, dict], targets: list[str]) -> None:
    """A minus B of the same seed: target average, English, and the target languages A leads in, level in, and the
    range of its per-language lead in test pairs (correct answers), which a tie or a near-tie cannot hide."""
    def seeds_of(arm: str) -> set[int]:
        return {int(name.rsplit("-s", 1)[1]) for name in complete if name.startswith(f"{arm}-s")}

    rows = []
    for first, second in _PAIRS:
        for seed in sorted(seeds_of(first) & seeds_of(second)):
            a, b = f"{first}-s{seed}", f"{second}-s{seed}"
            leads = [complete[a][lang]["correct"] - complete[b][lang]["correct"] for lang in targets]
            ahead, level = sum(lead > 0 for lead in leads), sum(lead == 0 for lead in leads)
            rows.append(f"| `{first}` - `{second}` | {seed} | "
                        f"{100 * (accuracy[a]['target_average'] - accuracy[b]['target_average']):+.2f} | "
                        f"{100 * (accuracy[a]['source'] - accuracy[b]['source']):+.2f} | {ahead}/{len(targets)}"
                        f"{f' ({level} level)' if level else ''} | {min(leads):+d} to {max(leads):+d} |")
    if rows:
        print("\nPaired by seed (points; leads in test pairs of one language).\n")
        print("| comparison | seed | target average | English | targets ahead | lead per target language |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))


def _table_position(group: str) -> tuple[int, str]:
    """The teacher, then the paper's arms in its order, then the others by name (the cache's order is its hashes')."""
    order = ["teacher", "none", "finetune", "pretrain"]
    return (order.index(group) if group in order else len(order), group)


def _dev_table(teacher_dev: dict, arms: dict[str, list[Path]]) -> None:
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
