"""Render a benchmark result: terminal tables (rich), bench.json, bench.md and two PNG plots.

Each table is built once as plain rows (`Table`) and rendered both to the terminal and to
Markdown, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdcompress.machine import cpu_summary
from kdcompress.io import write_json_atomic

JSON_NAME = "bench.json"
MARKDOWN_NAME = "bench.md"
LATENCY_PLOT = "latency_vs_accuracy.png"
ACCURACY_PLOT = "accuracy_per_language.png"
REPORT_FILES = (JSON_NAME, MARKDOWN_NAME, LATENCY_PLOT, ACCURACY_PLOT)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    right_from: int = 1  # columns from this index on are numbers: right-aligned


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _delta(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _threads(count: int) -> str:
    return f"{count} intra-op thread{'s' if count != 1 else ''}"


def model_kind(info: dict) -> str:
    """'pytorch', 'onnx', 'onnx fused' or 'onnx int8': the format column and the plot labels."""
    parts = [info["format"]]
    if info.get("optimized"):
        parts.append("fused")
    if info.get("quantization") not in (None, "none", ""):
        parts.append(info["quantization"])
    return " ".join(parts)


def headline_label(settings: dict) -> str:
    cell = settings["headline"]
    length = "real lengths" if cell["seq_len"] == "real" else f"length {cell['seq_len']}"
    return f"batch {cell['batch_size']}, {length}"


def summary_table(result: dict) -> Table:
    settings = result["settings"]
    headers = ["model", "format", "size MB", "load s", "peak RSS MB", "median ms", "p90 ms", "p99 ms",
               "e2e ms", "seq/s", "speedup", f"{settings['source_lang']} %", "target %", "Δ target"]
    rows = []
    for name, info in result["models"].items():
        head = result["headline"].get(name)  # absent for models measured for accuracy only
        acc = result["accuracy"].get(name)  # absent for models timed only
        timing = [_ms(head["median_ms"]), _ms(head["p90_ms"]), _ms(head["p99_ms"]), _ms(head["e2e_median_ms"]),
                  f"{head['throughput_per_s']:.0f}", f"{head['speedup']:.2f}×"] if head else ["–"] * 6
        rows.append([
            name, model_kind(info), _mb(info.get("size_mb")), f"{info['load_seconds']:.2f}",
            _mb(info.get("peak_rss_mb")), *timing,
            *([_pct(acc["source"]), _pct(acc["target_average"]),
               "baseline" if name == settings["baseline"] else _delta(acc["delta_vs_baseline"]["target_average"])]
              if acc else ["–", "–", "timed only"]),
        ])
    return Table(f"{settings['task']} on {settings['device']}: latency at {headline_label(settings)} "
                 f"(model only), accuracy in %", headers, rows, right_from=2)


def latency_table(result: dict) -> Table:
    headers = ["cell", "model", "tokens", "median ms", "p90 ms", "p99 ms", "mean ms", "e2e ms",
               "e2e p90 ms", "seq/s", "speedup", "e2e speedup", "n"]
    rows = []
    for entry in result["latency"]:
        model, e2e = entry["model_only"], entry["end_to_end"]
        rows.append([entry["cell"], entry["model"], f"{entry['mean_tokens']:.0f}", _ms(model["median_ms"]),
                     _ms(model["p90_ms"]), _ms(model["p99_ms"]), _ms(model["mean_ms"]), _ms(e2e["median_ms"]),
                     _ms(e2e["p90_ms"]), f"{model['throughput_per_s']:.0f}", f"{entry['speedup']:.2f}×",
                     f"{entry['e2e_speedup']:.2f}×", str(model["samples"])])
    return Table("Latency grid (model only; e2e = end to end including tokenization; speedup = baseline median / "
                 "model median; tokens = mean padded length; n = timed calls)", headers, rows, right_from=2)


def accuracy_table(result: dict) -> Table:
    settings = result["settings"]
    names = [name for name in result["models"] if name in result["accuracy"]]
    headers = ["language", "n"] + names
    langs = [settings["source_lang"], *settings["target_langs"]]
    rows = []

    def cell(name: str, lang: str | None) -> str:
        acc = result["accuracy"][name]
        value = acc["target_average"] if lang is None else acc["per_language"][lang]["accuracy"]
        if name == settings["baseline"]:
            return _pct(value)
        delta = acc["delta_vs_baseline"]["target_average" if lang is None else lang]
        return f"{_pct(value)} ({_delta(delta)})"

    for lang in langs:
        label = f"{lang} (source)" if lang == settings["source_lang"] else lang
        rows.append([label, str(result["data"][lang]["n"])] + [cell(n, lang) for n in names])
    rows.append(["target average", ""] + [cell(n, None) for n in names])
    return Table(f"Accuracy % per language ({settings['task']} {settings['split']}; "
                 f"in brackets: points vs baseline {settings['baseline']})", headers, rows, right_from=1)


def serving_table(result: dict) -> Table | None:
    """Exported models as served by kdcompress.runtime.Predictor: memory and cold start of a process that
    imports only the predictor, and throughput with length buckets vs arrival order."""
    rows = []
    for name, info in result["models"].items():
        if info.get("served_by") != "kdcompress.runtime.Predictor":
            continue
        tp = info.get("throughput") or {}
        cold = info.get("cold_start_seconds")
        rows.append([name, info.get("runtime", "?"), info.get("inference_precision") or "–", _mb(info.get("size_mb")),
                     _mb(info.get("peak_rss_mb")),
                     "–" if info.get("peak_rss_mb") is None or info.get("size_mb") is None
                     else _mb(info["peak_rss_mb"] - info["size_mb"]),
                     "–" if cold is None else f"{cold:.2f}",
                     f"{tp['bucketed_rows_per_s']:.0f}" if tp else "–", f"{tp['arrival_rows_per_s']:.0f}" if tp else "–",
                     f"{tp['bucketed_vs_arrival']:.2f}×" if tp else "–"])
    if not rows:
        return None
    some = next((i["throughput"] for i in result["models"].values() if i.get("throughput")), None)
    what = (f"{some['rows']} sentences at batch {some['batch_size']}, end to end" if some else "not measured")
    return Table("Serving exported models (kdcompress.runtime.Predictor, no torch): peak RSS and cold start (process "
                 "start to first prediction) of a fresh process importing only the predictor; throughput on "
                 f"{what}, length-bucketed vs arrival order",
                 ["model", "runtime", "OV precision", "file MB", "peak RSS MB", "RSS - file MB", "cold start s",
                  "bucketed rows/s", "arrival rows/s", "ratio"], rows, right_from=3)


def tables(result: dict) -> list[Table]:
    serving = serving_table(result)
    return [summary_table(result), accuracy_table(result), latency_table(result)] + ([serving] if serving else [])


def to_rich(table: Table):
    from rich.table import Table as RichTable

    rich_table = RichTable(title=table.title, title_justify="left", header_style="bold")
    for index, header in enumerate(table.headers):
        rich_table.add_column(header, justify="right" if index >= table.right_from else "left",
                              no_wrap=index == 0)
    for row in table.rows:
        rich_table.add_row(*row)
    return rich_table


def to_markdown(table: Table) -> str:
    align = ["---:" if i >= table.right_from else ":---" for i in range(len(table.headers))]
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def print_report(result: dict, console=None) -> None:
    from kdcompress.console import report_console

    console = console or report_console()
    console.print(f"[bold]Machine:[/] {cpu_summary(result['machine'])}; "
                  f"{_threads(result['settings']['threads'])} ({result['settings']['threads_source']})",
                  highlight=False)
    for table in tables(result):
        console.print(to_rich(table))
    for warning in result["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"Report: {result['settings']['out']}", highlight=False)


def render_markdown(result: dict) -> str:
    settings, machine = result["settings"], result["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    front = ", ".join(name for name, head in result["headline"].items() if head["pareto"])
    limit_text = f"a seeded random sample of {settings['limit']}" if settings["limit"] else "all"
    parts = [
        f"# kdcompress bench: {settings['task']} ({settings['split']} split) on {settings['device']}",
        "",
        f"- Machine: {cpu_summary(machine)}; {machine['memory_gib']} GiB RAM; {machine['os']}",
        f"- Libraries: {libraries}",
        f"- Threads: {_threads(settings['threads'])} ({settings['threads_source']}), 1 inter-op, "
        "the same for PyTorch and ONNX Runtime",
        f"- Latency: {settings['warmup']} warm-up calls, then up to {settings['repeats']} timed calls per model and "
        f"cell in {settings['rounds']} interleaved rounds (models round-robin, order rotating), at most "
        f"~{settings['max_seconds_per_cell']:g} s per model and cell; fixed-length cells pad or truncate the task's "
        "sentences to exactly L tokens, real-length cells use them with dynamic padding (max "
        + (f"{settings['max_length']} tokens)" if settings["max_length"] else "each model's training length)"),
        f"- Headline latency: {headline_label(settings)}, median, model only; Pareto front (latency vs target "
        f"average; models that run the same computation share their median latency): {front}",
        f"- Accuracy: languages {settings['source_lang']} (source) + {len(settings['target_langs'])} targets, "
        f"{limit_text} examples per language; baseline: {settings['baseline']}",
        "- Memory: peak RSS of a fresh process that loads the model and runs one "
        f"batch {settings['memory_probe_batch'][0]} × {settings['memory_probe_batch'][1]} forward pass"
        if settings["measure_memory"] else "- Memory: not measured (--no-memory)",
        "",
    ]
    if settings.get("command"):
        parts += ["```", settings["command"], "```", ""]
    for warning in result["warnings"]:
        parts += [f"> **Warning:** {warning}", ""]
    for table in tables(result):
        parts += [to_markdown(table), ""]
    if result["models"] and settings["measure_memory"]:
        mem = Table("Memory (fresh process per model; 'model' = peak minus RSS after importing the libraries)",
                    ["model", "peak RSS MB", "model MB", "load s"],
                    [[n, _mb(i.get("peak_rss_mb")), _mb(i.get("model_rss_mb")), f"{i['load_seconds']:.2f}"]
                     for n, i in result["models"].items()])
        parts += [to_markdown(mem), ""]
    parts += [f"![latency vs accuracy]({LATENCY_PLOT})", "", f"![accuracy per language]({ACCURACY_PLOT})", ""]
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_accuracy(result: dict, path: Path) -> None:
    plt = _pyplot()
    settings = result["settings"]
    names = [n for n in result["models"] if n in result["headline"] and n in result["accuracy"]]  # timed, scored
    latency = [result["headline"][n]["median_ms"] for n in names]
    acc = [100 * (result["accuracy"][n]["target_average"] or 0.0) for n in names]
    front = [i for i, n in enumerate(names) if result["headline"][n]["pareto"]]

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    colors = plt.get_cmap("tab10")
    every_model = list(result["models"])  # colours follow this order, as in the accuracy plot
    for i, name in enumerate(names):
        ax.scatter(latency[i], acc[i], s=70, color=colors(every_model.index(name) % 10), zorder=3,
                   label=f"{name} ({model_kind(result['models'][name])})")
        ax.annotate(name, (latency[i], acc[i]), textcoords="offset points", xytext=(7, 5), fontsize=9)
    if front:
        ordered = sorted(front, key=lambda i: latency[i])
        ax.step([latency[i] for i in ordered], [acc[i] for i in ordered], where="post", color="grey",
                linestyle="--", linewidth=1, zorder=2)
        ax.scatter([latency[i] for i in ordered], [acc[i] for i in ordered], s=180, facecolors="none",
                   edgecolors="black", linewidths=1.2, zorder=4, label="Pareto front")
    if max(latency) / max(min(latency), 1e-9) > 8:
        ax.set_xscale("log")
    ax.set_xlabel(f"median latency, ms ({headline_label(settings)}, model only, {_threads(settings['threads'])})")
    ax.set_ylabel(f"target-language average accuracy, % ({len(settings['target_langs'])} languages)")
    ax.set_title(f"{settings['task']}: latency vs accuracy ({settings['device']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_accuracy_per_language(result: dict, path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    settings = result["settings"]
    names = [name for name in result["models"] if name in result["accuracy"]]
    langs = [settings["source_lang"], *settings["target_langs"]]
    labels = [f"{settings['source_lang']}\n(source)"] + list(settings["target_langs"]) + ["target\navg"]
    x = np.arange(len(labels), dtype=float)
    x[-1] += 0.5  # set the average apart from the languages
    width = 0.8 / max(len(names), 1)

    width_in = min(max(8.0, 2 + 0.18 * len(labels) * len(names)), 16.0)  # readable without scrolling
    fig, ax = plt.subplots(figsize=(width_in, 5.0), dpi=120)
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        acc = result["accuracy"][name]
        values = [100 * acc["per_language"][lang]["accuracy"] for lang in langs] + [100 * (acc["target_average"] or 0)]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, color=colors(i % 10),
               label=f"{name} ({model_kind(result['models'][name])})")
    chance = 100 / len(result["models"][names[0]]["labels"])
    ax.axhline(chance, color="black", linewidth=0.8, linestyle="--", label=f"chance ({chance:.0f}%)")
    ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(x[-1] - 0.75, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy, %")
    ax.set_title(f"{settings['task']} {settings['split']}: accuracy per language")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(names) + 1, 5), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: dict, folder: Path) -> list[str]:
    """Write bench.json, bench.md and the plots into `folder`; returns the file names."""
    plot_latency_vs_accuracy(result, folder / LATENCY_PLOT)
    plot_accuracy_per_language(result, folder / ACCURACY_PLOT)
    (folder / MARKDOWN_NAME).write_text(render_markdown(result), encoding="utf-8")
    write_json_atomic(folder / JSON_NAME, result)
    return list(REPORT_FILES)
