"""The candidate students of `compress`, as data: a candidate is a shape that the transfer recipe distils.

Spelling (the `candidates` setting): `static` (token embeddings, pooled, a linear head: no transformer layer),
`L` (L of the teacher's layers at its width), `LxH` (L layers, H wide) or `LviaA` (L layers distilled from the
A-layer candidate, a teacher assistant: Mirzadeh et al. 2020; the SIB-200 study found a 4-layer student closer to the
teacher through a 6-layer one). Candidates are distilled cheapest-first, by an estimate of their compute per token;
which one is fastest is then measured, never assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdcompress.errors import KDCompressError

STATIC = "static"
_SHAPE = re.compile(r"^(\d+)(?:x(\d+))?(?:via(\d+))?$")
KINDS_HELP = ("static, L (layers at the teacher's width), LxH (layers x hidden width) or LviaA (L layers through an "
              "A-layer teacher assistant), e.g. static,2,4,4via6,6x256")


@dataclass(frozen=True)
class Candidate:
    name: str
    layers: int  # 0: the static student
    hidden: int | None  # None: the teacher's width
    via: int | None = None  # the teacher assistant's layers (at the teacher's width); None: straight from the teacher

    @property
    def is_static(self) -> bool:
        return self.layers == 0

    def cost(self, teacher_hidden: int) -> float:
        """Multiply-adds per token, up to a constant: attention and feed-forward projections scale with H^2."""
        return self.layers * (self.hidden or teacher_hidden) ** 2

    @property
    def assistant(self) -> "Candidate | None":
        return None if self.via is None else Candidate(f"{self.via}L", self.via, None)

    def distill_settings(self) -> dict:
        return {"student_layers": self.layers, "student_hidden": self.hidden}


def parse_candidate(spec: str) -> Candidate:
    text = str(spec).strip().lower()
    if text == STATIC:
        return Candidate(STATIC, 0, None)
    match = _SHAPE.match(text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise KDCompressError(f"unknown candidate {spec!r}; write {KINDS_HELP}")
    layers, hidden = int(match.group(1)), int(match.group(2)) if match.group(2) else None
    via = int(match.group(3)) if match.group(3) else None
    if via is not None and via <= layers:
        raise KDCompressError(f"candidate {spec!r}: a teacher assistant must be deeper than its student; write "
                              f"{layers}viaA with A above {layers} (e.g. {layers}via{max(6, layers + 2)})")
    name = f"{layers}L" + (f"x{hidden}" if hidden else "") + (f"via{via}L" if via else "")
    return Candidate(name, layers, hidden, via)


def parse_candidates(specs: list[str]) -> list[Candidate]:
    if not specs:
        raise KDCompressError(f"no candidates given; pass --candidates with {KINDS_HELP}")
    parsed = [parse_candidate(s) for s in specs]
    names = [c.name for c in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise KDCompressError(f"candidate(s) {', '.join(repeated)} given twice in --candidates; name each once")
    return parsed


def cheapest_first(candidates: list[Candidate], teacher_layers: int, teacher_hidden: int) -> list[Candidate]:
    too_deep = [c.name for c in candidates if max(c.layers, c.via or 0) > teacher_layers]
    if too_deep:
        raise KDCompressError(f"candidate(s) {', '.join(too_deep)} have more layers than the teacher's "
                              f"{teacher_layers}; choose at most {teacher_layers}")
    too_wide = [c.name for c in candidates if c.hidden and c.hidden > teacher_hidden]
    if too_wide:
        raise KDCompressError(f"candidate(s) {', '.join(too_wide)} are wider than the teacher's {teacher_hidden}; "
                              f"choose a hidden width up to {teacher_hidden}")
    # A student through an assistant runs at its own cost; it comes after the direct student of its shape
    return sorted(candidates, key=lambda c: (c.cost(teacher_hidden), c.layers, c.via or 0))
