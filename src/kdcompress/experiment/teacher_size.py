"""The paper's claim 3 (a larger teacher gives the strongest student), read across experiments.

An experiment has one teacher; the same arms distilled from another teacher are another experiment. Naming its
directory in `compare_teachers` puts the two side by side in this report: the teachers' sizes, each shared arm's
students, and the claim's verdict per arm, paired by seed as the other claims are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kdcompress.errors import KDCompressError
from kdcompress.experiment.summary import compare_rows, verdict
from kdcompress.io import read_json


def teacher_facts(model_dir: str | Path) -> dict:
    """Layers, width and parameter count of a model directory, read from its config and the safetensors header
    (no weights are loaded)."""
    from safetensors import safe_open

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():  # a hub teacher: its size is not read here
        return {"model": str(model_dir), "layers": None, "hidden": None, "parameters": None}
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    parameters = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="np") as weights:
            parameters += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return {"model": str(folder), "layers": config.get("num_hidden_layers"), "hidden": config.get("hidden_size"),
            "parameters": parameters}


def _label(facts: dict) -> str:
    return f"{facts['layers']}-layer teacher"


def _size(facts: dict) -> tuple:
    return facts["parameters"] or 0, facts["layers"] or 0


def load_compared(paths: list[str], *, own_out: Path, task: str, source: str, targets: list[str]) -> dict:
    """The reports of the experiments named in compare_teachers, checked to be comparable with this one.

    Returns {"reports": [...], "missing": [paths without a report yet]}: in a series of runs the later ones do
    not exist when the first runs, so a missing report is stated in the report, not an error; a report of
    another task or other languages is."""
    reports, missing, seen = [], [], {own_out.resolve()}
    for path in paths:
        folder = Path(path).expanduser()
        if folder.resolve() in seen:
            # one config file serves every run of a series: each skips itself; and one experiment named twice
            # (a config's list plus --compare-teachers, or "runs/x" and "runs/x/") would print its claims twice
            continue
        seen.add(folder.resolve())
        report = folder / "report" / "experiment.json"
        if not report.is_file():
            missing.append(str(path))
            continue
        data = read_json(report, what=f"experiment report of {path} (compare_teachers)")
        if "teacher" not in data:  # a report written before teacher facts: its bench names the teacher's folder
            bench = read_json(folder / "bench" / "bench.json",
                              what=f"bench report of {path} (compare_teachers)")
            data["teacher"] = teacher_facts(bench["settings"]["models"]["teacher"])
        theirs = (data["config"]["task"], data["source_lang"], data["target_langs"])
        if theirs != (task, source, targets):
            raise KDCompressError(f"compare_teachers: {path} measured {theirs[0]}, {theirs[1]} -> "
                                  f"{len(theirs[2])} languages, this experiment {task}, {source} -> {len(targets)}; "
                                  "compare experiments of the same task and languages")
        reports.append({"out": str(path), "teacher": data["teacher"], "summary": data["summary"]})
    return {"reports": reports, "missing": missing}


def teacher_size_claims(own: dict, compared: dict) -> list[dict]:
    """One claim per arm both experiments ran: the larger teacher's student minus the smaller one's."""
    claims = []
    for other in compared["reports"]:
        larger, smaller = sorted([own, other], key=lambda r: _size(r["teacher"]), reverse=True)
        if _size(larger["teacher"]) == _size(smaller["teacher"]) or not _size(smaller["teacher"])[0]:
            why = ("has a teacher of the same size" if _size(smaller["teacher"])[0] else
                   "or this experiment has a teacher whose size is unknown (not a local directory)")
            claims.append({"claim": "A larger teacher gives the strongest student", "testable": False,
                           "verdict": f"not tested: {other['out']} {why}", "evidence": None})
            continue
        arms = [key.split("/")[0] for key in own["summary"]
                if key.endswith("/pytorch") and key != "teacher/pytorch" and key in other["summary"]]
        for arm in arms:
            ahead, behind = f"{arm}, {_label(larger['teacher'])}", f"{arm}, {_label(smaller['teacher'])}"
            evidence = compare_rows(larger["summary"][f"{arm}/pytorch"], smaller["summary"][f"{arm}/pytorch"],
                                    ahead, behind)
            claims.append({"claim": f"A larger teacher gives the strongest student (`{arm}`: "
                                    f"{_label(larger['teacher'])} against {_label(smaller['teacher'])})",
                           "testable": True, "verdict": verdict(evidence), "evidence": evidence})
    return claims


def render_teacher_sizes(own: dict, compared: dict) -> list[str]:
    if not compared["reports"] and not compared["missing"]:
        return []
    lines = ["", "## Teacher size: the same arms from other teachers", ""]
    rows = sorted([{**own, "out": "this experiment"}, *compared["reports"]], key=lambda r: _size(r["teacher"]),
                  reverse=True)
    arms = [key.split("/")[0] for key in own["summary"] if key.endswith("/pytorch") and key != "teacher/pytorch"]
    if len(rows) > 1:
        lines += ["Accuracy %, source / target average (mean over seeds). A student starts from its own teacher's "
                  "layers, so a teacher that is itself a distilled student hands on what its own distillation taught "
                  "it: the comparison is of whole pipelines, not of soft labels alone.", "",
                  "| teacher | parameters | experiment | teacher | " + " | ".join(f"`{a}`" for a in arms) + " |",
                  "|---|---|---|---|" + "---|" * len(arms)]
        for row in rows:
            cells = [_pair(row["summary"].get(f"{arm}/pytorch")) for arm in [*["teacher"], *arms]]
            size = f"{row['teacher']['parameters'] / 1e6:.1f}M" if row["teacher"]["parameters"] else "–"
            lines.append(f"| {_label(row['teacher'])} | {size} | {row['out']} | "
                         + " | ".join(cells) + " |")
    for path in compared["missing"]:
        lines.append(f"\n{path}: no report yet; run that experiment, then rerun this one (every step is reused).")
    return lines


def _pair(row: dict | None) -> str:
    if not row:
        return "–"
    return f"{100 * row['source']['mean']:.1f} / {100 * row['target_average']['mean']:.1f}"
