"""Which model rows a benchmark runs: `--model NAME=PATH` parsed, and each exported directory expanded to
the runtimes asked for (--runtime), as typed `ModelSpec`s (folder + runtime) that nothing parses back."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from kdcompress.bench.config import ALL_RUNTIMES, BenchConfig
from kdcompress.errors import KDCompressError
from kdcompress.runtime.registry import ModelSpec, exported_runtimes


def parse_model_specs(specs: Sequence[str]) -> dict[str, str]:
    """["teacher=runs/t", "runs/student"] -> {"teacher": "runs/t", "student": "runs/student"}."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/\\")).name, spec
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise KDCompressError(f"--model {spec!r} is not NAME=PATH; write e.g. --model student=runs/student")
        if name in models:
            raise KDCompressError(f"two models are named {name!r}; give each --model a different NAME")
        models[name] = path
    return models


def expand_runtimes(plan: BenchConfig) -> tuple[BenchConfig, dict[str, ModelSpec], list[str]]:
    """Every exported directory once per runtime asked for (--runtime) that can run it, named NAME@RUNTIME
    where it runs on several; PyTorch models, and exported ones that run on one runtime, keep their names.
    Returns the plan with the models, baseline and timed models renamed, each row's typed spec (its folder and
    runtime: the name is never parsed back), and notes for what was not run."""
    from kdcompress.bench.runners import detect_runtime

    owners = {name: detect_runtime(Path(path).expanduser()) for name, path in plan.models.items()}
    if plan.device != "cpu":
        return plan, {name: ModelSpec(path) for name, path in plan.models.items()}, []
    wanted = [row for row in exported_runtimes() if plan.runtime in (row.name, ALL_RUNTIMES)]
    for row in {*wanted, *(own for own in owners.values() if own.exported)}:
        row.require()  # a missing extra: one line naming the install command, before any work
    models: dict[str, str] = {}
    specs: dict[str, ModelSpec] = {}
    renamed: dict[str, list[str]] = {}
    notes = []
    for name, path in plan.models.items():
        own = owners[name]
        if not own.exported:
            models[name], specs[name], renamed[name] = path, ModelSpec(path), [name]
            continue
        runtimes = []
        for row in wanted:
            why = row.why_not(Path(path).expanduser())
            if why and row.model_file(Path(path).expanduser()) is not None:
                notes.append(f"model {name} was not run on {row.title}: {why}; export it with `kdcompress "
                             f"export-onnx --runtime {row.name}` for that")
            if not why:
                runtimes.append(row.name)
        if not runtimes:  # e.g. an OpenVINO directory under --runtime onnxruntime: its own runtime
            runtimes = [own.name]
        # A model that runs on one runtime keeps its name; one run on several gets a row per runtime.
        names = [name] if len(runtimes) == 1 else [f"{name}@{runtime}" for runtime in runtimes]
        renamed[name] = names
        for new, runtime in zip(names, runtimes):
            if new in plan.models and new != name:
                raise KDCompressError(f"model name {new!r} is taken; rename that --model")
            models[new], specs[new] = path, ModelSpec(path, runtime)
    timed = [new for name in plan.latency_models for new in renamed[name]]
    scored = None if plan.accuracy_models is None else [new for name in plan.accuracy_models for new in renamed[name]]
    plan = dataclasses.replace(plan, models=models, baseline=renamed[plan.baseline][0], latency_models=timed,
                               accuracy_models=scored)
    return plan, specs, notes
