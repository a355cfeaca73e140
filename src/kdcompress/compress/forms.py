"""The deployable forms of a student: each a runtime and a precision, exported under the per-language control.

ONNX Runtime's dynamic int8, OpenVINO's automatic precision (bf16 where the CPU has it and every checked language
keeps its accuracy, else f32) and OpenVINO's NNCF int8. Which one is fastest depends on the CPU (benchmarks/README.md),
so compress measures them all on the machine at hand."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Form:
    suffix: str  # model names: <candidate>-<suffix>
    runtime: str
    quantize: str
    int8: bool


FORMS = (
    Form("ort", "onnxruntime", "none", False),
    Form("ort-int8", "onnxruntime", "dynamic", True),
    Form("ov", "openvino", "none", False),
    Form("ov-int8", "openvino", "static", True),
)


def forms_for(runtimes: list[str], int8: bool) -> list[Form]:
    return [f for f in FORMS if f.runtime in runtimes and (int8 or not f.int8)]
