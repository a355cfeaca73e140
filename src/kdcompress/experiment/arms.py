"""What each arm changed, how far it stays from the teacher, and the pretraining-corpus-size curve.

Pure functions on the experiment config and the aggregated summary, so the report can show what was
searched, what won, and the gaps the study's goals are stated in (target average, source, worst language).
"""

from __future__ import annotations

from typing import Any

from kdcompress.training.config import DistillConfig
from kdcompress.training.strategies import get_strategy

_UNSET = object()  # equal to no TOML value
_DEFAULT_CORPUS_SIZE = DistillConfig.__dataclass_fields__["corpus_max_sentences"].default


def _changes(cfg: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of an arm (ExperimentConfig.arm_list) that differ from the shared [distill] table."""
    return {k: v for k, v in settings.items() if cfg.distill.get(k, _UNSET) != v}


def teacher_gaps(summary: dict, group: str) -> dict | None:
    """Points the group's mean trails the fine-tuned teacher: target average, source and the worst target."""
    row, teacher = summary.get(f"{group}/pytorch"), summary.get("teacher/pytorch")
    if not row or not teacher:
        return None
    source = row["source_lang"]
    per_lang = {lang: teacher["per_language"][lang]["mean"] - stat["mean"]
                for lang, stat in row["per_language"].items() if lang != source and lang in teacher["per_language"]}
    worst = max(per_lang, key=per_lang.get) if per_lang else None
    return {"target": teacher["target_average"]["mean"] - row["target_average"]["mean"],
            "source": teacher["source"]["mean"] - row["source"]["mean"],
            "worst_lang": worst, "worst": per_lang[worst] if worst else None}


def arm_rows(cfg: Any, summary: dict) -> list[dict]:
    """One row per arm (plain strategies first): strategy, changes, accuracy and gaps to the teacher."""
    rows = []
    for arm, strategy, settings in cfg.arm_list():
        row = summary.get(f"{arm}/pytorch")
        if row is None:
            continue
        rows.append({"arm": arm, "strategy": strategy, "changes": _changes(cfg, settings), "seeds": len(row["seeds"]),
                     "source": row["source"]["mean"], "target_average": row["target_average"]["mean"],
                     "target_std": row["target_average"]["std"], "gaps": teacher_gaps(summary, arm)})
    return rows


def corpus_size_curves(cfg: Any, summary: dict, corpus_sentences: dict[str, int] | None = None) -> list[dict]:
    """Arms that use KD during pretraining and differ only in corpus_max_sentences, as curves of points.

    Each curve: {"label", "arms", "points": [(sentences, target mean, target std), ...]} sorted by size. A size is
    the sentences the general student really read (`corpus_sentences`, per arm) where known, else the cap. Curves
    need two sizes; an arm of the same strategy that also changed other settings (more epochs, say) comes as a
    one-point curve labelled by its name, beside the curve it extends.
    """
    corpus_sentences = corpus_sentences or {}
    curves: dict[tuple, dict] = {}
    for arm, strategy, settings in cfg.arm_list():
        row = summary.get(f"{arm}/pytorch")
        if row is None or "pretrain_kd" not in get_strategy(strategy).stages:
            continue
        size = int(corpus_sentences.get(arm) or settings.get("corpus_max_sentences", _DEFAULT_CORPUS_SIZE))
        key = (strategy, *sorted((k, repr(v)) for k, v in settings.items() if k != "corpus_max_sentences"))
        curve = curves.setdefault(key, {"label": strategy, "arms": [], "points": []})
        curve["arms"].append(arm)
        curve["points"].append((size, row["target_average"]["mean"], row["target_average"]["std"]))
    lines = {key: c for key, c in curves.items() if len({p[0] for p in c["points"]}) > 1}
    with_lines = {key[0] for key in lines}  # strategies that have a curve
    extra = [{**c, "label": c["arms"][0]} for key, c in curves.items()
             if len(c["points"]) == 1 and key[0] in with_lines]
    return [{**c, "points": sorted(c["points"])} for c in [*lines.values(), *extra]]


def plot_corpus_size_curves(path, curves: list[dict], teacher_target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for curve in curves:
        sizes = [p[0] for p in curve["points"]]
        single = len(curve["points"]) == 1
        ax.errorbar(sizes, [100 * p[1] for p in curve["points"]], yerr=[100 * p[2] for p in curve["points"]],
                    marker="D" if single else "o", linestyle="none" if single else "-", capsize=3,
                    label=f"student, {curve['label']}")
    if teacher_target is not None:
        ax.axhline(100 * teacher_target, color="grey", linestyle="--", label="teacher (fine-tuned)")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining-KD corpus (sentences, log scale)")
    ax.set_ylabel("target-language average accuracy (%)")
    ax.set_title("Zero-shot accuracy against pretraining-corpus size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_arms(cfg: Any, summary: dict, split: str) -> list[str]:
    """The report's "Arms" section: settings changed, accuracy, gaps to the teacher; the best arm marked."""
    rows = arm_rows(cfg, summary)
    if not rows:
        return []
    best = max(rows, key=lambda r: r["target_average"])["arm"]
    mark = "chosen (best target average on dev)" if split == "dev" else "best target average"
    lines = ["", "## Arms: what each changed, and its distance to the teacher", "",
             f"Gaps are teacher minus student, in points on the `{split}` split (positive: the student trails).", "",
             "| arm | strategy | settings changed | seeds | source | target avg | gap: target | gap: source "
             "| worst target language (gap) | |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        changes = ", ".join(f"{k}={v}" for k, v in row["changes"].items()) or "–"
        gaps = row["gaps"]
        spread = f" ± {100 * row['target_std']:.1f}" if row["seeds"] > 1 else ""
        gap_cells = "– | – | –"
        if gaps and gaps["worst_lang"]:
            gap_cells = (f"{100 * gaps['target']:+.1f} | {100 * gaps['source']:+.1f} | "
                         f"{gaps['worst_lang']} ({100 * gaps['worst']:+.1f})")
        chosen = mark if row["arm"] == best else ""
        lines.append(f"| {row['arm']} | {row['strategy']} | {changes} | {row['seeds']} | {100 * row['source']:.1f} | "
                     f"{100 * row['target_average']:.1f}{spread} | {gap_cells} | {chosen} |")
    return lines
