"""The deployable forms of a student: each an exported runtime of the registry and a precision.

Every runtime that can run here gives two forms: its full-precision export (OpenVINO infers in bf16 where the CPU
has it and every checked language keeps its accuracy) and its first int8 mode (ONNX Runtime's dynamic int8, NNCF's
static int8 on OpenVINO), each under the per-language control. Which is fastest depends on the CPU
(benchmarks/README.md), so compress measures them all on the machine at hand; a new registry row brings its forms."""

from __future__ import annotations

from dataclasses import dataclass

from kdcompress.runtime.registry import Runtime


@dataclass(frozen=True)
class Form:
    runtime: str
    quantize: str

    @property
    def int8(self) -> bool:
        return self.quantize != "none"

    @property
    def suffix(self) -> str:  # model names: <candidate>-<suffix>
        return f"{self.runtime}-int8" if self.int8 else self.runtime


def forms_for(runtimes: list[Runtime], int8: bool) -> list[Form]:
    forms = []
    for row in runtimes:
        forms.append(Form(row.name, "none"))
        int8_mode = next((mode for mode in row.quantize_modes if mode != "none"), None)
        if int8 and int8_mode:
            forms.append(Form(row.name, int8_mode))
    return forms
