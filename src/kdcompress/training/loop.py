"""The one training loop every recipe shares, on Hugging Face Accelerate.

A recipe hands over the modules to train, a way to turn example indices into a batch, and a
loss function; the loop owns everything else: device placement, mixed precision, gradient
accumulation, AdamW with linear warm-up, progress, checkpoints and resumption. The same code
runs on a CPU, a GPU or many (`accelerate launch -m kdcompress distill ...`).

Determinism: the data order of epoch e is a permutation seeded by (seed, e), and the global
RNG is reseeded at every optimizer step from (seed, step, process rank). A run resumed from a
checkpoint therefore sees exactly the batches and dropout masks an uninterrupted run would have
seen, without having to save and restore RNG states.

With N processes, process k takes batches k, k+N, ... of that order (each of --batch-size), so one
optimizer step sees the same N*batch_size examples a single process sees with batch N*batch_size;
gradients are averaged and the learning-rate schedule counts optimizer steps. Losses that average over
examples therefore train exactly as one process would (up to float rounding); see tests/test_multiprocess.py
for what differs where losses average over tokens, or draw dropout and MLM masks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from kdcompress import stopping
from kdcompress.errors import KDCompressError
from kdcompress.progress import Progress
from kdcompress.training.finite_guard import check_loss, check_weights, overflow_guard

Batch = dict[str, torch.Tensor]
# compute_loss(batch, modules) gets the prepared (possibly DDP-wrapped) trainable modules by name.
LossFn = Callable[[Batch, dict[str, torch.nn.Module]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class LoopSettings:
    stage: str
    lr: float
    epochs: float
    batch_size: int
    seed: int
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None
    grad_accum: int = 1
    save_every: int = 50
    mixed_precision: str = "auto"
    checkpoint_dir: Path | None = None  # where checkpoints go (None: no checkpoints)
    resume: bool = False  # continue from the checkpoint in checkpoint_dir, if there is one


@dataclass
class LoopResult:
    steps: int
    examples: int
    wall_seconds: float  # this invocation's
    history: list[dict]
    # Training seconds of earlier invocations, as far as the checkpoint resumed from kept them (work after an
    # invocation's last checkpoint was lost and done again); 0 for a run not resumed, None where the checkpoint
    # predates this record.
    earlier_seconds: float | None = 0.0


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # float32 on every CPU: one setting gives the same numbers on every machine (an experiment reuses steps by their
    # settings); bf16 pays only where the CPU has AMX, by an amount benchmarks/cpu_training_precision.py measures.
    return "no"


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the global RNG at an optimizer step. Each process of a distributed run gets its own (rank 0, and a
    single process, the same as ever), so the processes draw independent dropout and MLM masks for their examples."""
    return (seed * 1_000_003 + step + 104_729 * rank) % (2**31)


class _Checkpoint:
    """Model weights as safetensors, optimizer/scheduler state loaded with weights_only=True, progress as JSON."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.latest = directory / "latest"

    def save(self, modules: dict[str, torch.nn.Module], optimizer, scheduler, progress: dict) -> None:
        tmp = self.directory / ".saving"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, module in modules.items():
            # Frozen parameters (a student's word embeddings: 96M of a 6-layer e5-small's 107M) never change, and a
            # resumed run rebuilds them as the first run did. With them a 12-layer checkpoint took 1.3 s on a CPU
            # (0.2 s without), where a GPU runs the 50 steps between checkpoints in about 5 s.
            frozen = {key for key, parameter in module.named_parameters(remove_duplicate=False)
                      if not parameter.requires_grad}
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k not in frozen}
            save_file(_untie(state), str(tmp / f"{name}.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "progress.json").write_text(json.dumps(progress))
        shutil.rmtree(self.latest, ignore_errors=True)
        os.replace(tmp, self.latest)

    def exists(self) -> bool:
        return (self.latest / "progress.json").is_file()

    def load(self, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict:
        try:
            progress = json.loads((self.latest / "progress.json").read_text())
            for name, module in modules.items():
                module.load_state_dict(load_file(str(self.latest / f"{name}.safetensors")), strict=False)
            state = torch.load(self.latest / "optimizer.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as exc:
            raise KDCompressError(
                f"checkpoint {self.latest} is corrupt or incomplete ({type(exc).__name__}); "
                "delete it to restart this stage, or rerun without --resume"
            ) from None
        return progress


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share storage (tied embeddings); store a copy of each repeat."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def _progress_bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.1f} ex/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=disable,
    )


def epoch_order(dataset_size: int, seed: int, batch_size: int, lengths: list[int] | None = None,
                window: int = 50) -> list[int]:
    """The example order of one epoch, a function of the seed alone (so a resumed run finds its place).

    With `lengths`, batches are length-bucketed: each window of `window` batches of a random permutation is
    sorted by length and cut into batches, and the batches are shuffled. Similar lengths share a batch, so
    padding (and time) drops on a corpus of mixed lengths, while every epoch still sees a fresh mix.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(dataset_size, generator=generator).tolist()
    if lengths is None:
        return order
    span = batch_size * window
    batches = []
    for start in range(0, dataset_size, span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    # Only full batches are shuffled: the DataLoader cuts the order into consecutive blocks of batch_size, so a
    # short batch anywhere but last would shift every block after it.
    full = [b for b in batches if len(b) == batch_size]
    rest = [i for b in batches if len(b) < batch_size for i in b]
    shuffled = torch.randperm(len(full), generator=generator).tolist()
    return [i for b in shuffled for i in full[b]] + rest


def run_training(*, settings: LoopSettings, model: torch.nn.Module, dataset_size: int,
                 make_batch: Callable[[list[int]], Batch], compute_loss: LossFn,
                 extra_modules: dict[str, torch.nn.Module] | None = None,
                 frozen_modules: list[torch.nn.Module] = (), lengths: list[int] | None = None) -> LoopResult:
    """Train `model` (and `extra_modules`, e.g. learned projections) to minimise `compute_loss`.

    `frozen_modules` (teachers) are moved to the training device and kept in eval mode.
    """
    # Accelerate keeps one state per process and refuses a second Accelerator with another mixed precision ("has
    # already been initialized"), so a process that trains twice (the API, an experiment's worker, arms that differ
    # in --mixed-precision) failed at its second run. Each run starts the Accelerator's state afresh; the process
    # group of a distributed launch (accelerate's PartialState) stays. Private, but it is accelerate's own test reset.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum,
                              mixed_precision=resolve_mixed_precision(settings.mixed_precision),
                              cpu=not torch.cuda.is_available(),
                              # some parameters may get no gradient (the MLM head with --mlm-weight 0), which
                              # DistributedDataParallel refuses at the second step unless told to look for them
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(settings.seed)
    trainables = {"model": model, **(extra_modules or {})}
    no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name  # noqa: E731
    named = [(n, p) for module in trainables.values() for n, p in module.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": settings.weight_decay},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=settings.lr,
    )
    batches_per_epoch = math.ceil(dataset_size / settings.batch_size / accelerator.num_processes)
    total_steps = max(1, math.ceil(settings.epochs * batches_per_epoch / settings.grad_accum))
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_steps), total_steps)
    for frozen in frozen_modules:
        frozen.to(accelerator.device).eval().requires_grad_(False)

    checkpoint = _Checkpoint(settings.checkpoint_dir)
    step, micro_step, history, examples_seen = 0, 0, [], 0
    last_checkpoint, earlier_seconds = 0, 0.0
    if settings.resume and checkpoint.exists():
        progress = checkpoint.load(trainables, optimizer, scheduler)
        step, micro_step = progress["step"], progress["micro_step"]
        last_checkpoint, earlier_seconds = step, progress.get("seconds")
        history, examples_seen = progress["history"], progress["examples"]
        accelerator.print(f"[{settings.stage}] resumed at step {step}/{total_steps}")
    # The scheduler is stepped by hand, once per optimizer step. Prepared, Accelerate would step it once per
    # process at every optimizer step (its convention for a schedule counted in single-process batches), so a
    # 2-process run decayed the learning rate twice as fast and trained its second half at lr 0.
    prepared = accelerator.prepare(*trainables.values(), optimizer)
    prepared_modules, optimizer = prepared[:-1], prepared[-1]
    for module in prepared_modules:
        module.train()
    modules_by_name = dict(zip(trainables, prepared_modules))

    started, examples_before = time.perf_counter(), examples_seen
    # A stop request (Ctrl-C, SIGTERM) waits for the end of the optimizer step, where weights and optimizer state
    # agree, and the loop saves a checkpoint there before it stops (kdcompress.stopping).
    with _progress_bar(disable=not accelerator.is_main_process) as bar, \
            stopping.at_safe_points("this training step, once its checkpoint is saved"):
        task = bar.add_task(settings.stage, total=total_steps, completed=step, loss=float("nan"), rate=0.0)
        while step < total_steps:
            epoch, offset = divmod(micro_step, batches_per_epoch)
            # Buckets of one optimizer step's examples across all processes: N processes x batch B then see the
            # same examples at each step as one process with batch N*B.
            order = epoch_order(dataset_size, settings.seed + epoch, settings.batch_size * accelerator.num_processes,
                                lengths)
            loader = DataLoader(order, batch_size=settings.batch_size, collate_fn=make_batch)
            loader = accelerator.skip_first_batches(accelerator.prepare_data_loader(loader), offset)
            window_loss, window_examples = 0.0, 0
            for batch in loader:
                torch.manual_seed(_step_seed(settings.seed, step, accelerator.process_index))
                with accelerator.accumulate(*prepared_modules):
                    with accelerator.autocast():
                        loss, components = compute_loss(batch, modules_by_name)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_([p for m in prepared_modules for p in m.parameters()], 1.0)
                    with overflow_guard(stage=settings.stage, step=step + 1, last_checkpoint=last_checkpoint):
                        optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad()
                micro_step += 1
                size = int(next(iter(batch.values())).shape[0])
                window_loss += float(loss.detach()) / settings.grad_accum
                window_examples += size
                if not accelerator.sync_gradients:
                    continue
                step += 1
                examples_seen += window_examples * accelerator.num_processes
                if accelerator.num_processes > 1:  # log the mean over every process, not the main one's share
                    logged = accelerator.reduce(torch.tensor([window_loss, *components.values()], dtype=torch.float64,
                                                             device=accelerator.device), "mean").tolist()
                    window_loss, components = logged[0], dict(zip(components, logged[1:]))
                check_loss(window_loss, stage=settings.stage, step=step, last_checkpoint=last_checkpoint)
                history.append({"step": step, "loss": round(window_loss, 6),
                                **{k: round(v, 6) for k, v in components.items()},
                                "lr": scheduler.get_last_lr()[0]})
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=step, loss=window_loss, rate=(examples_seen - examples_before) / elapsed)
                window_loss, window_examples = 0.0, 0
                stopping_now = stopping.requested() is not None
                if accelerator.is_main_process and (step % settings.save_every == 0 or step == total_steps
                                                    or stopping_now):
                    unwrapped = {name: accelerator.unwrap_model(m) for name, m in zip(trainables, prepared_modules)}
                    check_weights(unwrapped.values(), stage=settings.stage, step=step,
                                  last_checkpoint=last_checkpoint)
                    checkpoint.save(unwrapped, optimizer, scheduler,
                                    {"step": step, "total_steps": total_steps, "micro_step": micro_step,
                                     "history": history, "examples": examples_seen,
                                     "seconds": None if earlier_seconds is None
                                     else earlier_seconds + time.perf_counter() - started})
                    last_checkpoint = step
                if stopping_now:
                    accelerator.print(f"[{settings.stage}] stopped at step {step}/{total_steps}; its checkpoint is "
                                      f"saved, so the same command resumes from it")
                    stopping.check()
                if step >= total_steps:
                    break
    accelerator.wait_for_everyone()
    return LoopResult(steps=step, examples=examples_seen, wall_seconds=time.perf_counter() - started, history=history,
                      earlier_seconds=earlier_seconds)
