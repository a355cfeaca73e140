"""frontier.json, frontier.md and frontier.png in the compress folder, and the closing terminal table.

The Markdown opens with the answer (the chosen model, its speed-ups and its gap in every language), then the whole
frontier, so a user reads the decision first and the evidence after it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdcompress.compress.frontier import Frontier
from kdcompress.io import write_json_atomic

FILES = ("frontier.json", "frontier.md", "frontier.png")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}x"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _long_key(row_latency: dict, prefix: str) -> str:
    return next(k for k in row_latency if k.startswith(prefix) and "real" not in k)


def _precision(row: dict) -> str:
    """The weights' precision, and the compute's where the runtime infers in another (OpenVINO's bf16 on fp32 weights)."""
    weights, compute = row.get("precision") or "fp32", row.get("inference_precision")
    return weights if not compute or compute in (weights, "f32") else f"{weights}, {compute} compute"


def headline(frontier: Frontier) -> str:
    """One line: the answer, or the closest miss."""
    if frontier.chosen:
        row = frontier.row(frontier.chosen)
        lat = row["latency"]
        mbert = lat[_long_key(lat, "speedup_vs_mbert_base_b1_")]
        lang, worst = row["test"]["gaps"]["worst_language"], row["test"]["gaps"]["worst_gap"]
        return (f"chosen: {row['name']} ({row['runtime']}, {_precision(row)}): "
                f"{_times(lat['speedup_vs_teacher_b1_real'])} the fp32 teacher at batch 1 (real lengths), "
                f"{_times(mbert)} the PyTorch mBERT-base shape at batch 1 x {_long_key(lat, 'b1_').split('_')[1]}; "
                f"test: {row['test']['gaps']['target_average']:+.1f} points on the target average, "
                f"{_pts(row['test']['gaps']['source'])} on the source, worst {lang} {worst:+.1f}")
    if frontier.closest:
        row = frontier.row(frontier.closest)
        return (f"no candidate meets the budget ({frontier.budget.describe()}) on dev; closest: {row['name']}, "
                f"{row['dev']['excess']:.1f} points over it (dev target average "
                f"{row['dev']['gaps']['target_average']:+.1f}, worst {row['dev']['gaps']['worst_language']} "
                f"{row['dev']['gaps']['worst_gap']:+.1f}); its export: {row['path']}")
    return "no candidate was exported"


def _dev_size(frontier: Frontier) -> str:
    """How coarse a per-language gap on dev is: with ~100 sentences a language, one sentence is one point."""
    counts = [entry["n"] for entry in frontier.teacher.get("dev", {}).get("per_language", {}).values()
              if isinstance(entry, dict) and entry.get("n")]
    if not counts:
        return ""
    fewest = min(counts)
    return (f" ({fewest} sentences in the smallest language: one sentence moves that language's gap by "
            f"{100 / fewest:.1f} points)")


def _with_se(gap: float | None, se: float | None) -> str:
    """A dev gap, with its standard error where the sentence-level results give one."""
    return _pts(gap) + (f" ± {se:.1f}" if se else "")


def markdown(frontier: Frontier) -> str:
    teacher = frontier.teacher
    from kdcompress.machine import cpu_summary

    lines = ["# Compression frontier", "", f"**{headline(frontier)}**", "",
             f"Budget: {frontier.budget.describe()}; chosen on dev{_dev_size(frontier)}, reported on test. "
             f"Teacher (fp32, PyTorch): {_pct(teacher['test']['source'])} source, "
             f"{_pct(teacher['test']['target_average'])} target average on test.", "",
             f"Machine: {cpu_summary(frontier.machine)}; {frontier.settings.get('threads') or 'physical-core'} "
             "threads.", ""]
    if frontier.chosen:
        row = frontier.row(frontier.chosen)
        lines += ["## The chosen model, per language (test)", "", "| language | teacher | chosen | gap (points) |",
                  "|---|---|---|---|"]
        source = frontier.settings.get("source_lang")
        if row["test"]["source"] is not None:
            lines.append(f"| {source} (source) | {_pct(teacher['test']['source'])} | {_pct(row['test']['source'])} | "
                         f"{_pts(row['test']['gaps']['source'])} |")
        for lang, acc in sorted(row["test"]["targets"].items(), key=lambda kv: -row["test"]["gaps"]["per_language"][kv[0]]):
            lines.append(f"| {lang} | {_pct(teacher['test']['targets'][lang])} | {_pct(acc)} | "
                         f"{_pts(row['test']['gaps']['per_language'][lang])} |")
        lines += ["", f"Serve it: `kdcompress predict {Path(frontier.settings['out']) / 'model'} --input texts.txt "
                  "--out predictions.jsonl`", ""]
    rows = frontier.rows
    long_ms = _long_key(rows[0]["latency"], "b1_") if rows else "b1_128_ms"
    long_x = _long_key(rows[0]["latency"], "speedup_vs_mbert_base_b1_") if rows else ""
    lines += ["## Every candidate", "",
              "Gaps are points below the teacher (dev: what the budget is judged on; test: reported); ± is the "
              "paired standard error of a dev gap. Latency: median, model only, measured side by side in "
              "one run.", "",
              f"| model | runtime | precision | dev gap avg | dev worst | meets | test target avg | test source | "
              f"test gap avg | test worst | b1 real ms | {long_ms.replace('_ms', '').replace('_', ' x ')} ms | "
              "x teacher | x mBERT-base | file MB | peak RSS MB | cold start s |",
              "|" + "---|" * 17]
    for r in rows:
        dev, test, lat = r["dev"]["gaps"], r["test"], r["latency"]
        mark = "**yes**" if r["dev"]["meets"] else "no"
        shared = " †" if r["dev"].get("judged_on") else ""
        chosen = " ⭐" if r["name"] == frontier.chosen else ""
        lines.append(f"| {r['name']}{chosen} | {r['runtime']} | {_precision(r)} | "
                     f"{_with_se(dev['target_average'], dev.get('target_average_se'))}{shared} | "
                     f"{dev['worst_language']} {_with_se(dev['worst_gap'], dev.get('worst_se'))}{shared} | {mark} | "
                     f"{_pct(test['target_average'])} | {_pct(test['source'])} | "
                     f"{_pts(test['gaps']['target_average'])} | {test['gaps']['worst_language']} "
                     f"{_pts(test['gaps']['worst_gap'])} | {_ms(lat['b1_real_ms'])} | {_ms(lat.get(long_ms))} | "
                     f"{_times(lat['speedup_vs_teacher_b1_real'])} | {_times(lat.get(long_x))} | "
                     f"{_mb(r['size_mb'])} | {_mb(r['peak_rss_mb'])} | {_seconds(r.get('cold_start_s'))} |")
    if any(r["dev"].get("judged_on") for r in rows):
        lines += ["", "† a full-precision form (fp32, or bf16 where the export's control kept every language) is "
                  "judged on its student's PyTorch fp32 dev accuracy, shared by all its full-precision forms: they "
                  "differ only by rounding. Each form's own dev gaps are in frontier.json (`form_gaps`)."]
    ref = frontier.reference
    lines += ["", f"Teacher latency: {_ms(teacher['latency']['b1_real_ms'])} ms at b1 real lengths; PyTorch fp32 "
              f"mBERT-base shape (random weights): {_ms(ref.get('latency_b1_real_ms'))} ms at b1 real lengths, "
              f"{_ms(ref.get('latency_' + long_ms))} ms at {long_ms.replace('_ms', '').replace('_', ' x ')}.", ""]
    if frontier.compared:
        lines += ["## The paper's strategies at the same shape (test)", "",
                  "| student | strategy | source | target average | gap avg | worst |", "|---|---|---|---|---|---|"]
        for c in frontier.compared:
            g = c["test"]["gaps"]
            lines.append(f"| {c['name']} | {c['strategy']} | {_pct(c['test']['source'])} | "
                         f"{_pct(c['test']['target_average'])} | {_pts(g['target_average'])} | "
                         f"{g['worst_language']} {_pts(g['worst_gap'])} |")
        lines.append("")
    if frontier.timings:
        total = sum(frontier.timings.values())
        lines += [f"## Compute: {total / 60:.1f} min of steps", "",
                  "Each step's wall time when it ran (a reused step: in an earlier run with the same settings).", "",
                  "| step | minutes | this run |", "|---|---|---|"]
        lines += [f"| {name} | {seconds / 60:.1f} | {'reused' if name in frontier.reused else 'ran'} |"
                  for name, seconds in frontier.timings.items()]
        lines.append("")
    lines += ["![latency against target accuracy](frontier.png)", ""]
    return "\n".join(lines)


def plot(frontier: Frontier, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"pytorch": "tab:gray", "onnxruntime": "tab:blue", "openvino": "tab:purple"}
    for r in frontier.rows:
        x, y = r["latency"]["b1_real_ms"], r["test"]["target_average"]
        if x is None or y is None:
            continue
        ax.scatter(x, 100 * y, color=colours.get(r["runtime"], "tab:green"),
                   marker="*" if r["name"] == frontier.chosen else "o", s=160 if r["name"] == frontier.chosen else 40)
        ax.annotate(r["name"], (x, 100 * y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    teacher = frontier.teacher
    if teacher["latency"]["b1_real_ms"]:
        ax.scatter(teacher["latency"]["b1_real_ms"], 100 * teacher["test"]["target_average"], color="black",
                   marker="s", s=50)
        ax.annotate("teacher (fp32)", (teacher["latency"]["b1_real_ms"], 100 * teacher["test"]["target_average"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    bound = 100 * teacher["test"]["target_average"] - frontier.budget.max_drop
    ax.axhline(bound, color="tab:red", linestyle="--", linewidth=1,
               label=f"budget: teacher - {frontier.budget.max_drop:g} points")
    ax.set_xscale("log")
    ax.set_xlabel("latency, batch 1, real lengths (ms, log scale)")
    ax.set_ylabel("target-language average accuracy, test (%)")
    ax.set_title("Compression frontier")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_frontier_report(out: Path, frontier: Frontier) -> None:
    write_json_atomic(out / "frontier.json", frontier.to_dict())
    tmp = out / ".frontier.md.tmp"
    tmp.write_text(markdown(frontier), encoding="utf-8")
    tmp.replace(out / "frontier.md")
    plot(frontier, out / "frontier.png")


def print_frontier(frontier: Frontier, console: Console) -> None:
    table = Table(title="compression frontier (dev: chosen on; test: reported)")
    for column in ("model", "runtime", "meets (dev)", "test target avg", "test gap", "b1 real ms", "x teacher"):
        table.add_column(column)
    for r in frontier.rows:
        table.add_row(r["name"] + (" *" if r["name"] == frontier.chosen else ""), r["runtime"],
                      "yes" if r["dev"]["meets"] else "no", _pct(r["test"]["target_average"]),
                      _pts(r["test"]["gaps"]["target_average"]), _ms(r["latency"]["b1_real_ms"]),
                      _times(r["latency"]["speedup_vs_teacher_b1_real"]))
    console.print(table)
    console.print(headline(frontier))
    console.print(f"report: {Path(frontier.settings['out']) / 'frontier.md'}")
