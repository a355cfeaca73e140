"""Aggregate bench results over seeds and read the paper's three claims off the numbers.

Pure functions on plain dicts (bench.json payloads), so the verdict logic is testable by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev


@dataclass(frozen=True)
class ModelRef:
    """What a benchmarked model is: a strategy's student (or the teacher), a seed, a form."""

    name: str  # the bench name
    group: str  # "teacher" or a strategy
    seed: int | None
    form: str  # "pytorch" or "int8"


# Accuracies are fractions; two means within this of each other are the same number of correct answers reached
# along different float roundings (the same per-seed values summed in another order), so they count as a tie.
TIE_TOLERANCE = 1e-9


def lead_or_tie(diff: float) -> str:
    """"lead", "tie" or "trail" for a difference of two mean accuracies (fractions)."""
    return "tie" if abs(diff) <= TIE_TOLERANCE else "lead" if diff > 0 else "trail"


def _spread(values: list[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def aggregate(refs: list[ModelRef], accuracy: dict[str, dict], headline: dict[str, dict], *,
              source_lang: str) -> dict[str, dict]:
    """{group/form: {"seeds", "source", "target_average", "per_language": {lang: {mean, std}}, "latency_ms"}}."""
    groups: dict[str, list[ModelRef]] = {}
    for ref in refs:
        groups.setdefault(f"{ref.group}/{ref.form}", []).append(ref)
    summary = {}
    for key, members in groups.items():
        members = sorted(members, key=lambda r: (r.seed is None, r.seed))
        results = [accuracy[m.name] for m in members]
        langs = list(results[0]["per_language"])
        per_language = {}
        for lang in langs:
            values = [r["per_language"][lang]["accuracy"] for r in results]
            per_language[lang] = {"mean": mean(values), "std": _spread(values), "values": values}
        sources = [r["source"] for r in results]
        targets = [r["target_average"] for r in results]
        latencies = [headline[m.name] for m in members if m.name in headline]
        summary[key] = {
            "group": members[0].group, "form": members[0].form, "seeds": [m.seed for m in members],
            "source_lang": source_lang,
            "models": [m.name for m in members],
            "source": {"mean": mean(sources), "std": _spread(sources), "values": sources},
            "target_average": {"mean": mean(targets), "std": _spread(targets), "values": targets},
            "per_language": per_language,
            "latency_median_ms": latencies[0]["median_ms"] if latencies else None,
            "latency_p90_ms": latencies[0]["p90_ms"] if latencies else None,
        }
    return summary


def _compare(summary: dict, better: str, worse: str) -> dict | None:
    a, b = summary.get(f"{better}/pytorch"), summary.get(f"{worse}/pytorch")
    return compare_rows(a, b, better, worse) if a and b else None


def compare_rows(a: dict, b: dict, better: str, worse: str) -> dict:
    """Row `a` (named `better`) minus row `b` (`worse`): target average paired by seed, per-language wins, source.

    Only the seeds both rows have are compared. Means over different seed sets compare different runs: a study
    read before its last seeds were trained (or another experiment with fewer seeds) put one arm's two seeds
    against the other's one, and the pairing by position dropped a pair whose seeds sat at different places."""
    common = [seed for seed in a["seeds"] if seed in b["seeds"]]
    unpaired = sorted({*a["seeds"], *b["seeds"]} - set(common), key=str)
    if common and unpaired:
        a, b = on_seeds(a, common), on_seeds(b, common)
    paired = [(x - y) for x, y, sa, sb in zip(a["target_average"]["values"], b["target_average"]["values"],
                                              a["seeds"], b["seeds"]) if sa == sb]
    diff = a["target_average"]["mean"] - b["target_average"]["mean"]
    spread = math.sqrt(a["target_average"]["std"] ** 2 + b["target_average"]["std"] ** 2)
    langs = a["per_language"].keys() - {a["source_lang"]}
    outcomes = [lead_or_tie(a["per_language"][lang]["mean"] - b["per_language"][lang]["mean"]) for lang in langs]
    return {"ahead": better, "behind": worse, "target_diff": diff, "spread": spread, "paired_diffs": paired,
            "seeds_agreeing": sum(lead_or_tie(d) == "lead" for d in paired), "seeds": len(paired),
            "source_diff": a["source"]["mean"] - b["source"]["mean"],
            "languages_better": outcomes.count("lead"), "languages_tied": outcomes.count("tie"),
            "languages": len(langs), "seeds_left_out": unpaired if common else []}


def on_seeds(row: dict, seeds: list) -> dict:
    """An `aggregate` row on `seeds` only (in that order), its means and spreads recomputed."""
    keep = [row["seeds"].index(seed) for seed in seeds]

    def numbers(stat: dict) -> dict:
        values = [stat["values"][i] for i in keep]
        return {"mean": mean(values), "std": _spread(values), "values": values}

    restricted = {**row, "seeds": list(seeds), "source": numbers(row["source"]),
                  "target_average": numbers(row["target_average"]),
                  "per_language": {lang: numbers(stat) for lang, stat in row["per_language"].items()}}
    if "models" in row:
        restricted["models"] = [row["models"][i] for i in keep]
    return restricted


def verdict(comparison: dict) -> str:
    """supported / contradicted when every seed agrees on the sign; otherwise inconclusive."""
    n, up = comparison["seeds"], comparison["seeds_agreeing"]
    if n == 0:
        return "inconclusive"
    note = " (one seed: indicative only)" if n == 1 else ""
    if up == n and comparison["target_diff"] > 0:
        return "supported" + note
    if up == 0 and comparison["target_diff"] < 0:
        return "contradicted" + note
    return "inconclusive: the seeds disagree"


def _hurt_verdict(comparison: dict) -> str:
    """Claim 2's wording: does KD during fine-tuning (the "behind" side) trail the student without KD?"""
    outcome = verdict(comparison)
    word = ("observed" if outcome.startswith("supported") else "not observed" if outcome.startswith("contradicted")
            else "inconclusive")
    return word + (" (one seed: indicative only)" if comparison["seeds"] == 1 else "")


def assess_claims(summary: dict, *, transfer_arms: tuple[str, ...] = (),
                  teacher_size: list[dict] | None = None) -> list[dict]:
    """The paper's three claims (Soltan, Khan and Hamza, 2021), each with testability, verdict and evidence.

    transfer_arms: arms with KD during fine-tuning on a multilingual transfer set; claim 2 is read again for
    each of them (against `none`), since the paper's KD in fine-tuning saw source-language text only.
    teacher_size: claim 3 read against other experiments (experiment/teacher_size.py), when any were named.
    """
    claims = []
    c1 = _compare(summary, "pretrain", "finetune")
    claims.append({
        "claim": "KD during pretraining beats KD during fine-tuning for zero-shot transfer",
        "testable": c1 is not None,
        "verdict": verdict(c1) if c1 else "not tested: needs the pretrain and finetune strategies",
        "evidence": c1,
    })
    c2 = _compare(summary, "none", "finetune")
    claims.append({
        "claim": "KD during fine-tuning may hurt zero-shot accuracy (against the same student fine-tuned without KD)",
        "testable": c2 is not None,
        "verdict": _hurt_verdict(c2) if c2 else "not tested: needs the none and finetune strategies",
        "evidence": c2,
    })
    if transfer_arms and "none/pytorch" not in summary:  # one line, not one per arm, for what cannot be read
        claims.append({
            "claim": "KD during fine-tuning on a multilingual transfer set may hurt zero-shot accuracy (against the "
                     "same student fine-tuned without KD)",
            "testable": False, "verdict": "not tested: needs the none strategy", "evidence": None,
        })
        transfer_arms = ()
    for arm in transfer_arms:
        comparison = _compare(summary, "none", arm)
        claims.append({
            "claim": f"KD during fine-tuning on a multilingual transfer set (`{arm}`) may hurt zero-shot accuracy "
                     "(against the same student fine-tuned without KD)",
            "testable": comparison is not None,
            "verdict": _hurt_verdict(comparison) if comparison else "not tested: needs the none strategy",
            "evidence": comparison,
        })
    claims += teacher_size or [{
        "claim": "A larger teacher gives the strongest student",
        "testable": False,
        "verdict": "not tested: this experiment has one teacher; run the same arms from another teacher and name "
                   "that experiment in compare_teachers",
        "evidence": None,
    }]
    return claims
