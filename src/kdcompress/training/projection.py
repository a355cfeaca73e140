"""Learned projections that let a hidden-state loss compare a narrow student with a wide teacher."""

from __future__ import annotations

import torch
from torch import nn


class HiddenProjection(nn.Module):
    """One linear map student width -> teacher width shared by all layer pairs (TinyBERT); identity when equal."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.proj = nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(states)

    @property
    def is_identity(self) -> bool:
        return isinstance(self.proj, nn.Identity)


def paired_hidden_states(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...],
                         layer_map: tuple[int, ...], projection: HiddenProjection) -> tuple[list, list]:
    """Student layer j's output against the output of the teacher layer it was copied from."""
    students = [projection(student_hidden[j + 1]) for j in range(len(layer_map))]
    teachers = [teacher_hidden[t + 1] for t in layer_map]
    return students, teachers
