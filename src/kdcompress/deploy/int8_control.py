"""Int8 accuracy per language under control, on ONNX Runtime and on OpenVINO.

The gate: every checked language keeps at least `min_agreement` (97% by default) argmax agreement
with the fp32 model on its dev sentences, or - where the task's labels are known - its dev accuracy
within ACCURACY_SLACK (1 point) of fp32's. The default int8 is tried first; where a language fails,
fallbacks are tried in a fixed order, each recorded with why it was tried and what it measured:

1. per-channel weights with reduced (7-bit) range - ORT's `reduce_range`, NNCF's `overflow_fix`;
2. fp32 embeddings - the embedding lookup left unquantized;
3. OpenVINO only: int8 weights only, activations at the inference precision (NNCF weight compression;
   ONNX Runtime's 8-bit MatMulNBits ran slower than its fp32 graph, benchmarks/README.md);
4. sensitive operators in fp32 - the sensitivity ranking of int8_search.py and its search for the
   fewest fallbacks (on OpenVINO passed to NNCF as an ignored scope by name).

With `confidence` above 0.5 (compress passes its --confidence), a language whose accuracy drop is over the slack
fails only when it is over by more than z paired standard errors: the drop is counted sentence by sentence
against fp32 (as McNemar's test does), and on 99 dev sentences one flipped sentence is a whole point.

The first model that passes is kept; when none does, the one with the fewest failing languages and
then the highest worst-language agreement. Runtime-specific code lives in the callers
(int8_step.py, openvino_step.py): here only the gate and the ladder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kdcompress.runtime.registry import get_runtime

DEFAULT_MIN_AGREEMENT = 0.97
ACCURACY_SLACK = 0.01  # one accuracy point


@dataclass(frozen=True)
class GateData:
    """The fp32 model's dev logits per language (the reference), and the labels where the task has them."""

    reference: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] | None  # task label index per row
    label_map: np.ndarray | None  # model class index -> task label index
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    source: str = ""
    confidence: float = 0.5  # 0.5: every accuracy drop read as measured

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)

    def hits(self, lang: str, logits: np.ndarray) -> np.ndarray | None:
        if self.labels is None or self.label_map is None:
            return None
        return self.label_map[logits.argmax(-1)] == self.labels[lang]

    def accuracy(self, lang: str, logits: np.ndarray) -> float | None:
        hits = self.hits(lang, logits)
        return None if hits is None else float(hits.mean())

    def allowance(self) -> str:
        """The accuracy rule in words, for notes and export.json."""
        text = f"its dev accuracy within {ACCURACY_SLACK:.0%} of fp32's"
        return text if self.confidence <= 0.5 else f"{text} plus {self.z:.2f} paired standard errors"


def paired_drop_se(reference_hits: np.ndarray, candidate_hits: np.ndarray) -> float:
    """Standard error of the accuracy drop, sentence by sentence: only the sentences the two models score
    differently carry it."""
    change = reference_hits.astype(float) - candidate_hits.astype(float)
    return float(change.std(ddof=1) / np.sqrt(len(change))) if len(change) > 1 else 0.0


def judge(gate: GateData, candidate: Mapping[str, np.ndarray]) -> dict:
    """Per language: agreement with fp32, fp32 and int8 accuracy, and whether it passes the gate."""
    per_lang = {}
    for lang, ref in gate.reference.items():
        logits = candidate[lang]
        agreement = float((ref.argmax(-1) == logits.argmax(-1)).mean())
        ref_hits, hits = gate.hits(lang, ref), gate.hits(lang, logits)
        drop = se = None
        if hits is not None:
            drop = float(ref_hits.mean() - hits.mean())
            se = paired_drop_se(ref_hits, hits)
        allowed = None if drop is None else ACCURACY_SLACK + max(0.0, gate.z) * se
        ok = agreement >= gate.min_agreement - 1e-9 or (drop is not None and drop <= allowed + 1e-9)
        per_lang[lang] = {"agreement": round(agreement, 4),
                          "fp32_accuracy": None if hits is None else _round(float(ref_hits.mean())),
                          "accuracy": None if hits is None else _round(float(hits.mean())),
                          "accuracy_drop": _round(drop), "allowed_drop": _round(allowed), "n": int(len(ref)),
                          "ok": ok}
    failing = [lang for lang, row in per_lang.items() if not row["ok"]]
    worst = min(per_lang, key=lambda lang: per_lang[lang]["agreement"])
    return {"passed": not failing, "failing": failing, "min_agreement": per_lang[worst]["agreement"],
            "worst_language": worst, "per_language": per_lang}


def shortfall(gate: GateData, candidate: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per language, how far it is from passing (0 when it passes): the smaller of its agreement's
    shortfall below the floor and its accuracy drop beyond the slack."""
    verdict = judge(gate, candidate)["per_language"]
    out = {}
    for lang, row in verdict.items():
        miss = max(0.0, gate.min_agreement - row["agreement"])
        if row["accuracy_drop"] is not None:
            miss = min(miss, max(0.0, row["accuracy_drop"] - row["allowed_drop"]))
        out[lang] = 0.0 if row["ok"] else round(miss, 6)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class Rung:
    """One int8 candidate: `build()` returns (artifact, details for export.json)."""

    name: str
    description: str
    build: Callable[[], tuple[Any, dict]]
    skip: str | None | Callable[[], str | None] = None  # a reason not to try it (or a function saying it, asked
    # when the rung's turn comes), e.g. the default already does this


@dataclass
class Ladder:
    gate: GateData
    evaluate: Callable[[Any], dict[str, np.ndarray]]  # artifact -> dev logits per language
    attempts: list[dict] = field(default_factory=list)

    def run(self, rungs: Sequence[Rung], on_attempt: Callable[[dict], None] | None = None) -> tuple[Any, dict]:
        """Try `rungs` in order until one passes the gate; return the kept artifact and the record."""
        artifacts: list[Any] = []
        why = "the default int8"
        for rung in rungs:
            skip = rung.skip() if callable(rung.skip) else rung.skip
            if skip:
                self.attempts.append({"name": rung.name, "description": rung.description, "tried": False,
                                      "why": skip})
                continue
            artifact, details = rung.build()
            verdict = judge(self.gate, self.evaluate(artifact))
            attempt = {"name": rung.name, "description": rung.description, "tried": True, "why": why,
                       "passed": verdict["passed"], "failing": verdict["failing"],
                       "min_agreement": verdict["min_agreement"], "worst_language": verdict["worst_language"],
                       "per_language": verdict["per_language"], **details}
            self.attempts.append(attempt)
            artifacts.append((len(self.attempts) - 1, artifact))
            if on_attempt:
                on_attempt(attempt)
            if verdict["passed"]:
                break
            shown = ", ".join(f"{lang} {verdict['per_language'][lang]['agreement']:.1%}"
                              for lang in verdict["failing"][:5])
            why = (f"{rung.name} left {len(verdict['failing'])} language(s) below {self.gate.min_agreement:.0%} "
                   f"agreement and the accuracy allowance: {shown}")
        if not artifacts:
            raise RuntimeError("no int8 candidate was tried")
        kept_index, kept = min(artifacts, key=lambda item: (
            not self.attempts[item[0]]["passed"], len(self.attempts[item[0]]["failing"]),
            -self.attempts[item[0]]["min_agreement"]))
        kept_attempt = self.attempts[kept_index]
        record = {
            "rule": (f"every checked language keeps >= {self.gate.min_agreement:.0%} argmax agreement with fp32 "
                     f"on its dev sentences, or {self.gate.allowance()}"),
            "data": self.gate.source,
            "passed": kept_attempt["passed"],
            "kept": kept_attempt["name"],
            "why_kept": ("the first candidate that passes" if kept_attempt["passed"] else
                         "no candidate passed: kept the one with the fewest failing languages, then the highest "
                         "worst-language agreement"),
            "min_agreement": kept_attempt["min_agreement"],
            "worst_language": kept_attempt["worst_language"],
            "attempts": self.attempts,
        }
        return kept, record


def _rank(attempt: dict) -> tuple:
    return len(attempt["failing"]), -attempt["min_agreement"]


def in_runtime_order(rungs: Sequence[Rung], runtime: str) -> list[Rung]:
    """`rungs` in the order the runtime's registry row lists them (runtime/registry.py: int8_rungs)."""
    by_name = {rung.name: rung for rung in rungs}
    order = get_runtime(runtime).int8_rungs
    if sorted(order) != sorted(by_name):
        raise ValueError(f"the {runtime} int8 rungs {', '.join(by_name)} differ from its registry row's "
                              f"{', '.join(order)}; list each rung once in both")
    return [by_name[name] for name in order]


def sensitive_base(attempts: Sequence[dict], scheme_rungs: Sequence[str] = ("default", "per_channel_reduced_range"),
                   embeddings_rung: str = "fp32_embeddings") -> tuple[str, bool, str]:
    """What the sensitive-operators rung builds on: (the better scheme rung, whether to keep the embeddings in
    fp32, why). fp32 embeddings are kept only where they at least halved the failing languages: alone they did
    not pass, and on a 250k-token vocabulary they make the file 4x larger."""
    tried = {a["name"]: a for a in attempts if a.get("tried")}
    scheme = min((tried[n] for n in scheme_rungs if n in tried), key=_rank)
    embeddings = tried.get(embeddings_rung)
    fp32_embeddings = embeddings is not None and len(embeddings["failing"]) * 2 <= len(scheme["failing"])
    why = (f"{scheme['name']} ({len(scheme['failing'])} failing)" + (
        f" with fp32 embeddings ({len(embeddings['failing'])} failing: at least halved)" if fp32_embeddings else
        " with int8 embeddings" + (f" (fp32 embeddings left {len(embeddings['failing'])} failing: not halved)"
                                   if embeddings is not None else "")))
    return scheme["name"], fp32_embeddings, why
