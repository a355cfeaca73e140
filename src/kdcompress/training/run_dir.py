"""The run directory of `distill`: `<out>.partial/` while it works, renamed to `<out>` only when complete.

    <out>.partial/run.json            the settings; --resume refuses different ones
    <out>.partial/stages/<name>/      a finished stage's model directory (never redone)
    <out>.partial/checkpoints/<name>/ the checkpoint of the stage in progress
    <out>.lock                        held while a process writes (a second run is refused)

A run that fails before its first checkpoint leaves nothing behind, so fixing the input and running
again just works; one that fails later keeps its work for --resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import PartialState

from kdcompress.console import stderr_console
from kdcompress.errors import KDCompressError
from kdcompress.io import check_writable_output, read_json, refuse_existing, write_json_atomic
from kdcompress.locks import output_lock

console = stderr_console()
# Settings that say how a run is carried out, not what it makes: a resume may change them.
_RUN_CONTROL = ("resume", "overwrite", "teacher_logits_cache")

#: train(checkpoint_dir) -> (model, tokenizer, LoopResult, LoopSettings)
StageFn = Callable[[Path], tuple]


def process_state() -> PartialState:
    """This process's place in a distributed launch (torchrun, `accelerate launch`), or a world of one.

    `cpu` must be given to the first PartialState of the process, since Accelerate shares one state:
    without CUDA, a launched world is a MULTI_CPU (gloo) one only when that state is created with cpu=True.
    Created without it, every launched process believed it was the only one, so all of them wrote the run
    folder and the second crashed on the first one's `.partial`. The loop's Accelerator uses the same rule.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world > 1 and state.num_processes != world:
        raise KDCompressError(f"launched as {world} processes, but Accelerate set up {state.num_processes} "
                              f"({state.distributed_type}); launch with `accelerate launch` or `torchrun`")
    return state


class RunDirectory:
    def __init__(self, out: str | os.PathLike, *, resume: bool, overwrite: bool):
        self.out = Path(out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self.resume = resume
        self.overwrite = overwrite
        self.state = process_state()
        self.stage_records: list[dict] = []
        # Training seconds spent on this run before this invocation (stages finished then, and what the checkpoints
        # resumed from kept); None once any of it is unknown (a checkpoint written before it was recorded).
        self.earlier_seconds: float | None = 0.0
        self._created_here = False

    def check(self) -> None:
        """Cheap checks that need no model: may OUT be written at all?"""
        check_writable_output(self.out, overwrite=self.overwrite)
        refuse_existing(self.out, overwrite=self.overwrite)
        if self.resume and not (self.work / "run.json").is_file():
            raise KDCompressError(f"nothing to resume: no unfinished run at {self.work}; drop --resume")
        if not self.resume and self.work.exists():
            raise KDCompressError(
                f"an unfinished run is in {self.work}; pass --resume to continue it, or delete that folder")

    @contextlib.contextmanager
    def open(self, settings: dict) -> Iterator["RunDirectory"]:
        """Hold the lock, create or reopen the work folder, and drop it again if nothing was trained."""
        lock = output_lock(self.out) if self.state.is_main_process else contextlib.nullcontext()
        with lock:
            self.check()  # again under the lock: another process may have finished meanwhile
            self.state.wait_for_everyone()  # every process checks before the main one creates the folder
            self._prepare(settings)
            try:
                yield self
            except BaseException:
                self._drop_if_untouched()
                raise

    def _prepare(self, settings: dict) -> None:
        run_file = self.work / "run.json"
        wanted = {k: v for k, v in settings.items() if k not in _RUN_CONTROL}
        if self.resume:
            saved = read_json(run_file, what="the unfinished run's settings")
            if not isinstance(saved, dict):
                raise KDCompressError(f"the unfinished run's settings at {run_file} are corrupt (not a JSON object); "
                                      f"delete {self.work} and rerun without --resume")
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            if changed:
                raise KDCompressError(
                    f"--resume with different settings ({', '.join(changed)}); rerun with the original settings")
            console.print(f"resuming the unfinished run in {self.work}")
        else:
            self._created_here = True
        if self.state.is_main_process:
            (self.work / "stages").mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, wanted)
        self.state.wait_for_everyone()

    def _drop_if_untouched(self) -> None:
        """A run that failed before any stage finished or any checkpoint was written has nothing to resume."""
        if not (self._created_here and self.state.is_main_process and self.work.exists()):
            return
        stages = self.work / "stages"
        checkpoints = self.work / "checkpoints"
        trained = (stages.exists() and any(stages.iterdir())) or (
            checkpoints.exists() and any(p.name != ".saving" for d in checkpoints.iterdir() for p in d.iterdir()))
        if not trained:
            shutil.rmtree(self.work, ignore_errors=True)

    def stage(self, name: str, train: StageFn) -> Path:
        """Run `train` once; reuse a finished stage."""
        stage_dir = self.work / "stages" / name
        marker = stage_dir / "stage.json"
        if marker.is_file():
            console.print(f"[dim]stage {name}: already done, reused[/]")
            record = json.loads(marker.read_text(encoding="utf-8"))
            earlier = record.get("earlier_seconds", 0.0)  # a stage finished in an earlier invocation: all of it
            self._add_earlier(None if earlier is None else record["wall_seconds"] + earlier)
            self.stage_records.append(record)
            return stage_dir
        model, tokenizer, result, settings = train(self.work / "checkpoints" / name)
        self._add_earlier(result.earlier_seconds)
        summary = {"name": name, "steps": result.steps, "examples": result.examples,
                   "wall_seconds": round(result.wall_seconds, 2),
                   **({"earlier_seconds": None if result.earlier_seconds is None else round(result.earlier_seconds, 2)}
                      if result.earlier_seconds != 0 else {}),
                   "settings": {k: str(v) if isinstance(v, Path) else v
                                for k, v in dataclasses.asdict(settings).items()},
                   "history": result.history}
        if self.state.is_main_process:
            tmp = stage_dir.with_name(f".{name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / "stage.json", summary)
            os.replace(tmp, stage_dir)
            shutil.rmtree(self.work / "checkpoints" / name, ignore_errors=True)
        self.state.wait_for_everyone()
        self.stage_records.append(summary)
        return stage_dir

    def _add_earlier(self, seconds: float | None) -> None:
        if self.earlier_seconds is not None:
            self.earlier_seconds = None if seconds is None else self.earlier_seconds + seconds

    def assemble(self, final_stage: Path, teacher_stage: Path | None) -> Path:
        """The output directory, built inside the work folder (same filesystem, so the rename is atomic)."""
        assembled = self.work / "output"
        shutil.rmtree(assembled, ignore_errors=True)
        shutil.copytree(final_stage, assembled, ignore=shutil.ignore_patterns("stage.json"))
        if teacher_stage is not None:
            shutil.copytree(teacher_stage, assembled / "teacher", ignore=shutil.ignore_patterns("stage.json"))
        return assembled

    def publish(self, assembled: Path) -> None:
        if self.out.exists():  # only with overwrite=True, checked before any work
            shutil.rmtree(self.out)
        os.replace(assembled, self.out)
        shutil.rmtree(self.work)
