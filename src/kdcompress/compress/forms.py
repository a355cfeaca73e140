"""The deployable forms of a student: each an exported runtime of the registry and a precision.

Every runtime that can run here gives two forms: its full-precision export (OpenVINO infers in bf16 where the CPU
has it and every checked language keeps its accuracy) and its first int8 mode (ONNX Runtime's dynamic int8, NNCF's
static int8 on OpenVINO), each under the per-language control; a runtime that can compile batch-1 static lengths
(OpenVINO) gives a third, its full-precision export with them. Which is fastest depends on the CPU
(benchmarks/README.md), so compress measures them all on the machine at hand; a new registry row brings its forms."""

from __future__ import annotations

from dataclasses import dataclass

from kdcompress.runtime.registry import Runtime


@dataclass(frozen=True)
class Form:
    runtime: str
    quantize: str
    static_lengths: tuple[int, ...] = ()

    @property
    def int8(self) -> bool:
        return self.quantize != "none"

    @property
    def suffix(self) -> str:  # model names: <candidate>-<suffix>
        return (self.runtime + ("-int8" if self.int8 else "") + ("-weights" if self.quantize == "weights" else "")
                + ("-static" if self.static_lengths else ""))

    def export_settings(self) -> dict:
        settings = {"runtime": self.runtime, "quantize": self.quantize}
        if self.static_lengths:
            settings["openvino_static_lengths"] = list(self.static_lengths)
        return settings


def static_lengths_for(max_length: int) -> tuple[int, ...]:
    """Multiples of 16 up to 64, then of 32, up to the model's length: at most 15 padded tokens up to 64 and 31 past
    it, and a 128-token model compiles 6 lengths (about 30 MB each for a 6-layer student)."""
    lengths = [n for n in range(16, 65, 16) if n < max_length] + [n for n in range(96, max_length, 32)]
    return tuple(lengths + [max_length])


def forms_for(runtimes: list[Runtime], int8: bool, static_lengths: tuple[int, ...] = ()) -> list[Form]:
    forms = []
    for row in runtimes:
        forms.append(Form(row.name, "none"))
        if static_lengths and row.static_lengths:
            forms.append(Form(row.name, "none", static_lengths))
        int8_mode = next((mode for mode in row.quantize_modes if mode != "none"), None)
        if int8 and int8_mode:
            forms.append(Form(row.name, int8_mode))
        if int8 and "weights" in row.quantize_modes:
            # beside full int8: weights only keeps the compiled model small (peak RSS) at bf16 speed
            forms.append(Form(row.name, "weights"))
    return forms
