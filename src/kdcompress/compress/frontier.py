"""The compression frontier: every model `compress` made, its accuracy (dev: chosen on; test: reported on),
latency, size and memory, and which one is the answer.

The answer is the fastest deployable form (batch 1, real lengths, model only) among those that meet the budget
on dev; test accuracy is only reported, never chosen on. Without one, the closest form is named instead. A student's
full-precision forms share its verdict (run.py `_try_candidate`), so the choice among them is by speed alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdcompress.compress.budget import Budget, gaps_to_teacher
from kdcompress.compress.reference import REFERENCE_NAME


@dataclass(frozen=True)
class Frontier:
    budget: Budget
    rows: list[dict]  # one per exported form of each candidate
    compared: list[dict]  # the strategies distilled beside the chosen shape (accuracy only)
    teacher: dict
    reference: dict  # the mBERT-base shape: latency only
    chosen: str | None
    closest: str | None
    machine: dict
    settings: dict
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    def row(self, name: str) -> dict:
        return next(r for r in self.rows if r["name"] == name)

    def to_dict(self) -> dict:
        return {"budget": {**vars(self.budget), "text": self.budget.describe()}, "chosen": self.chosen,
                "closest": self.closest, "teacher": self.teacher, "reference": self.reference, "rows": self.rows,
                "compared": self.compared, "machine": self.machine, "settings": self.settings,
                "timings_seconds": self.timings, "reused_steps": self.reused}


def _latency(payload: dict, model: str, batch_size: int, seq_len: Any) -> float | None:
    for entry in payload["latency"]:
        if entry["model"] == model and entry["batch_size"] == batch_size and entry["seq_len"] == seq_len:
            return entry["model_only"]["median_ms"]
    return None


def _test_accuracy(payload: dict, name: str) -> dict:
    acc = payload["accuracy"][name]
    return {"source": acc["source"], "target_average": acc["target_average"], "targets": acc["targets"]}


def _speed(payload: dict, name: str, long_len: int) -> dict:
    real = _latency(payload, name, 1, "real")
    fixed = _latency(payload, name, 1, long_len)
    teacher_real = _latency(payload, "teacher", 1, "real")
    reference_fixed = _latency(payload, REFERENCE_NAME, 1, long_len)
    return {"b1_real_ms": real, f"b1_{long_len}_ms": fixed,
            "speedup_vs_teacher_b1_real": teacher_real / real if real and teacher_real else None,
            f"speedup_vs_mbert_base_b1_{long_len}": reference_fixed / fixed if fixed and reference_fixed else None}


def build_frontier(budget: Budget, tried: list[dict], compared: dict[str, str], test: dict, teacher_dev: dict, *,
                   settings: dict, timings: dict, reused: list[str]) -> Frontier:
    teacher_test = _test_accuracy(test, "teacher")
    long_len = max(test["settings"]["seq_lens"])
    models_info = test["models"]
    rows = []
    for entry in tried:
        candidate = entry["candidate"]
        for name in entry["forms"]:
            form = entry["forms"][name]
            info = models_info.get(name, {})
            accuracy = _test_accuracy(test, name)
            rows.append({
                "name": name, "candidate": candidate.name, "layers": candidate.layers, "hidden": candidate.hidden,
                "assistant_layers": candidate.via,
                "form": form.suffix, "runtime": form.runtime, "precision": info.get("precision"),
                "inference_precision": info.get("inference_precision"),
                "quantization": info.get("quantization"), "path": entry["models"][name],
                "dev": entry["verdicts"][name], "test": {**accuracy,
                                                         "gaps": gaps_to_teacher(accuracy, teacher_test).to_dict()},
                "latency": _speed(test, name, long_len), "size_mb": info.get("size_mb"),
                "peak_rss_mb": info.get("peak_rss_mb"), "cold_start_s": info.get("cold_start_seconds"),
                "parameters": info.get("parameters"),
            })
    meeting = [r for r in rows if r["dev"]["meets"] and r["latency"]["b1_real_ms"]]
    chosen = min(meeting, key=lambda r: r["latency"]["b1_real_ms"])["name"] if meeting else None
    closest = None
    if chosen is None and rows:
        closest = min(rows, key=lambda r: (r["dev"]["excess"], r["latency"]["b1_real_ms"] or float("inf")))["name"]
    compared_rows = []
    for name in compared:
        accuracy = _test_accuracy(test, name)
        compared_rows.append({"name": name, "strategy": name.rsplit("-", 1)[-1], "path": compared[name],
                              "test": {**accuracy, "gaps": gaps_to_teacher(accuracy, teacher_test).to_dict()}})
    teacher = {"path": test["settings"]["models"]["teacher"] if "models" in test["settings"] else None,
               "dev": teacher_dev, "test": teacher_test, "latency": _speed(test, "teacher", long_len),
               "size_mb": models_info.get("teacher", {}).get("size_mb"),
               "peak_rss_mb": models_info.get("teacher", {}).get("peak_rss_mb")}
    reference = {"latency_b1_real_ms": _latency(test, REFERENCE_NAME, 1, "real"),
                 f"latency_b1_{long_len}_ms": _latency(test, REFERENCE_NAME, 1, long_len)}
    return Frontier(budget=budget, rows=rows, compared=compared_rows, teacher=teacher, reference=reference,
                    chosen=chosen, closest=closest, machine=test["machine"], settings=settings, timings=timings,
                    reused=reused)
