"""One training function for teachers and students, in-process or inside a Ray Train worker.

``train(config, report=...)`` builds the data, the model and the method's loss, optionally resumes from a
checkpoint, and for every epoch: trains (summing the method's named losses, mdistiller-style), evaluates
top-1/top-5, writes a checkpoint and calls ``report(metrics, checkpoint_dir)``. Ray Train and Ray Tune plug in
through that callback, a :class:`Runtime` (device, rank, world size, DDP wrapper) and an optional teacher
source (cache or actor); nothing here imports Ray.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset, default_collate

from raykd.methods import create_method
from raykd.models import create_model
from raykd.models.features import forward_features
from raykd.teachers.sources import InProcessTeacher, TeacherSource
from raykd.teachers.specs import TeacherSpec
from raykd.train.checkpoint import load_checkpoint, save_checkpoint
from raykd.train.config import TrainConfig
from raykd.train.tasks import Task, build_task

# what a checkpoint's meta.json says about the run, beside the epoch's metrics
RUN_META = ("model", "model_kwargs", "method", "method_params", "config", "data_fingerprint")

Report = Callable[[dict[str, Any], "Path | None"], None]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Runtime:
    """Where this copy of the training function runs: its device and its place among the DDP workers."""

    device: torch.device = field(default_factory=resolve_device)
    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shard_order(n: int, *, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """This worker's sample indices for ``epoch``: one shuffle shared by all workers (seeded by seed and epoch),
    dealt round-robin and cut to equal length so every DDP worker takes the same number of steps."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_worker = n // world_size
    return order[rank::world_size][:per_worker]


def teacher_spec(cfg: TrainConfig) -> TeacherSpec:
    """The teacher named by the config: a raykd checkpoint directory, or a weights file plus ``teacher_model``."""
    if cfg.teacher is None:
        raise ValueError(f"method {cfg.method!r} distils from a teacher: set 'teacher' to a checkpoint")
    path = Path(cfg.teacher)
    if path.is_dir():
        return TeacherSpec.from_checkpoint(path)
    if cfg.teacher_model is None:
        raise ValueError(f"teacher {path} is a bare weights file: also set 'teacher_model' (its registry name)")
    return TeacherSpec(name=cfg.teacher_model, model=cfg.teacher_model, model_kwargs=cfg.teacher_kwargs,
                       checkpoint=str(path))


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":  # the KD literature's classification recipe
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":  # the SR literature's (EDSR/RCAN/SwinIR: Adam, betas 0.9/0.99)
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'sgd' or 'adam'")


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "step":
        milestones = [max(1, int(cfg.epochs * 0.5)), max(1, int(cfg.epochs * 0.75))]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use 'cosine', 'step' or 'constant'")


def average_gradients(module: nn.Module) -> None:
    """DDP averages the student's gradients; a method's learned parts (FitNet's regressor, DVMSR's projection)
    live outside the DDP wrapper, so their gradients are averaged over the workers here to keep them in step."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train(
    config: TrainConfig | dict[str, Any],
    *,
    report: Report | None = None,
    teacher: Callable[[Task], TeacherSource] | None = None,
    runtime: Runtime | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config.model`` with ``config.method`` and return the last epoch's metrics, including the best
    value of the task's metric so far (``best_val_top1`` for classification).

    ``teacher`` builds the source of teacher outputs for the task (cache, actor); default: the config's
    teacher, run in-process.
    ``checkpoint_dir`` receives a checkpoint after every epoch (main worker only); ``resume_from`` continues a
    run from such a checkpoint, reproducing the uninterrupted run.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    rt = runtime or Runtime(device=resolve_device(cfg.device))
    device = rt.device
    seed_everything(cfg.seed)

    method = create_method(cfg.method, cfg.task, **cfg.method_params)
    task = build_task(cfg, cfg.student_input or method.student_input)
    model_kwargs = {**task.model_kwargs(), **cfg.model_kwargs}
    student = create_model(cfg.model, **model_kwargs)
    input_key, metric = task.input_key, task.metric

    needs_teacher = bool(method.teacher_outputs())
    source = None
    if needs_teacher:
        source = teacher(task) if teacher is not None else \
            InProcessTeacher(teacher_spec(cfg).build(device), method.teacher_outputs(), task.teacher_input_key,
                             task.teacher_forward)

    # one probe batch fixes the shapes a method's learned parts (e.g. a FitNet regressor) are built for
    probe = default_collate([task.train[i] for i in range(min(2, len(task.train)))])
    with torch.no_grad():
        student.eval()
        student_shapes = {k: tuple(v.shape[1:]) for k, v in
                          forward_features(student, probe[input_key], method.student_outputs()).items()}
        student.train()
        teacher_shapes = {k: tuple(v.shape[1:]) for k, v in source.request(probe)().items()} if needs_teacher else {}
    if needs_teacher and "logits" in teacher_shapes and teacher_shapes["logits"] != student_shapes["logits"]:
        raise ValueError(f"teacher predicts {teacher_shapes['logits']} classes but the student {student_shapes['logits']}")
    method.bind(student_shapes, teacher_shapes)

    student.to(device)
    method.to(device)
    model = rt.wrap_model(student)
    params = list(student.parameters()) + list(method.parameters())
    optimizer = make_optimizer(cfg, params)
    scheduler = make_scheduler(cfg, optimizer)
    amp_dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, best = 0, -math.inf
    metrics: dict[str, Any] = {}
    if resume_from is not None:
        meta = load_checkpoint(resume_from, model=student, optimizer=optimizer, scheduler=scheduler, method=method)
        start_epoch, best = meta["epoch"], meta.get(f"best_{metric}", -math.inf)
        metrics = {k: v for k, v in meta.items() if k not in RUN_META}  # what a finished run returns as it is

    for epoch in range(start_epoch, cfg.epochs):
        task.train.set_epoch(epoch)
        order = shard_order(len(task.train), seed=cfg.seed, epoch=epoch, rank=rt.rank, world_size=rt.world_size)
        if cfg.steps_per_epoch is not None:
            order = order[: cfg.steps_per_epoch * cfg.batch_size]
        loader = DataLoader(Subset(task.train, order), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda")
        model.train()
        sums: dict[str, float] = {}
        seen, started = 0, time.perf_counter()
        batches = loader
        if progress and rt.is_main:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for batch in batches:
            target = batch[task.target_key].to(device, non_blocking=True)
            x = batch[input_key].to(device, non_blocking=True)
            # the teacher's answer is requested first and collected after the student's forward, so a remote
            # (actor) teacher works while the student computes
            fetch_teacher = source.request(batch) if needs_teacher else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                student_out = forward_features(model, x, method.student_outputs())
                teacher_out = {k: v.to(device, non_blocking=True) for k, v in fetch_teacher().items()} \
                    if fetch_teacher is not None else {}
                losses = method({k: v.float() for k, v in student_out.items()}, teacher_out, target, epoch + 1)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if rt.world_size > 1:
                average_gradients(method)
            scaler.step(optimizer)
            scaler.update()
            n = len(x)
            seen += n
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item() * n
            sums["loss"] = sums.get("loss", 0.0) + total.item() * n
            if progress and rt.is_main:
                batches.set_postfix(loss=f"{total.item():.3f}")
        elapsed = time.perf_counter() - started
        scheduler.step()

        metrics = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
        metrics.update(task.evaluate(model, device))
        best = max(best, metrics[metric])
        metrics.update({"epoch": epoch + 1, f"best_{metric}": best, "lr": optimizer.param_groups[0]["lr"],
                        "samples_per_s": seen * rt.world_size / max(elapsed, 1e-9)})
        saved = None
        if checkpoint_dir is not None and rt.is_main:
            meta = {"model": cfg.model, "model_kwargs": model_kwargs, "method": cfg.method,
                    "method_params": method.params, "config": cfg.to_dict(), "data_fingerprint": task.fingerprint}
            meta.update(metrics)
            saved = save_checkpoint(checkpoint_dir, model=student, meta=meta, optimizer=optimizer,
                                    scheduler=scheduler, method=method)
        if report is not None:
            report(dict(metrics), saved)
    return metrics
