"""The user's accuracy budget, read against the teacher: gaps in points, whether a model meets it, how far off."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gaps:
    """Accuracy points below the teacher (negative: above it)."""

    target_average: float
    source: float | None
    per_language: dict[str, float]

    @property
    def worst_language(self) -> tuple[str, float]:
        lang = max(self.per_language, key=self.per_language.get)
        return lang, self.per_language[lang]

    def to_dict(self) -> dict:
        lang, gap = self.worst_language
        return {**asdict(self), "worst_language": lang, "worst_gap": gap}


@dataclass(frozen=True)
class Budget:
    max_drop: float
    max_drop_lang: float | None = None
    max_drop_source: float | None = None

    def excess(self, gaps: Gaps) -> float:
        """Points by which the model misses its budget at the worst of its bounds (<= 0: it meets it)."""
        misses = [gaps.target_average - self.max_drop]
        if self.max_drop_lang is not None:
            misses.append(gaps.worst_language[1] - self.max_drop_lang)
        if self.max_drop_source is not None and gaps.source is not None:
            misses.append(gaps.source - self.max_drop_source)
        return max(misses)

    def meets(self, gaps: Gaps) -> bool:
        # rounding to 1e-9 points: a model exactly at the bound meets it
        return self.excess(gaps) <= 1e-9

    def describe(self) -> str:
        parts = [f"at most {self.max_drop:g} points below the teacher on the target average"]
        if self.max_drop_lang is not None:
            parts.append(f"{self.max_drop_lang:g} in any target language")
        if self.max_drop_source is not None:
            parts.append(f"{self.max_drop_source:g} on the source language")
        return ", ".join(parts)


def gaps_to_teacher(model: dict, teacher: dict) -> Gaps:
    """Gaps of one bench accuracy entry ({source, targets, target_average}) to the teacher's, in points."""
    per_language = {lang: 100 * (teacher["targets"][lang] - acc) for lang, acc in model["targets"].items()}
    source = None if model["source"] is None else 100 * (teacher["source"] - model["source"])
    return Gaps(100 * (teacher["target_average"] - model["target_average"]), source, per_language)
