"""One training function for teachers and students, in-process or inside a Ray trial or Train worker.

``train(config, ...)`` sets the run up (:func:`setup`: task, method, student, teacher source, optimiser), optionally
resumes from a checkpoint, and for every epoch trains (:func:`train_epoch`: batches built on the device, the next
one prepared while the current one trains, the method's named losses summed mdistiller-style), evaluates, writes a
checkpoint and calls ``report(metrics, checkpoint_dir)``. Ray Tune and Ray Train plug in through that callback, a
:class:`Runtime` (device, rank, world size, DDP wrapper) and a teacher source; nothing here imports Ray.
"""
from __future__ import annotations

import dataclasses
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from raykd.config import ConfigError, OptimConfig, TrainConfig, from_json, to_json
from raykd.methods import Method, create_method
from raykd.models.build import build_model
from raykd.models.checkpoint import META_SCHEMA, meta_schema, read_meta
from raykd.models.features import capture, output_shapes
from raykd.teachers.sources import InProcessTeacher, TeacherSource
from raykd.teachers.spec import TeacherSpec
from raykd.train.checkpoint import load_checkpoint, save_checkpoint
from raykd.train.tasks import Task, build_task, task_builds

__all__ = ["Runtime", "Run", "train", "setup", "train_epoch", "resolve_device", "shard_order", "seed_everything",
           "NonFiniteLoss"]

Report = Callable[[dict[str, Any], "Path | None"], None]
COUNTERS = ("teacher_samples_computed", "cache_hits")
CHECK_EVERY = 50  # steps between checks that the loss is finite (each one waits for the device)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the run stops before saving such weights."""


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
    all_sum: Callable[[dict[str, int]], dict[str, int]] = lambda values: values

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shard_order(n: int, *, seed: int, epoch: int, rank: int, world_size: int,
                groups: list[tuple[int, int]] | None = None) -> np.ndarray:
    """This worker's item indices for ``epoch``: one shuffle shared by all workers (seeded by seed and epoch),
    dealt round-robin and cut to equal length so every DDP worker takes the same number of steps. With ``groups``
    (the row groups of a split streamed from the store) the groups come in a shuffled order and the items are
    shuffled within each, so every group is read once per epoch."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if groups is None:
        order = torch.randperm(n, generator=generator).numpy()
    else:
        order = np.concatenate([groups[g][0] + torch.randperm(groups[g][1] - groups[g][0], generator=generator).numpy()
                                for g in torch.randperm(len(groups), generator=generator).tolist()])
    return order[rank::world_size][: n // world_size]


@dataclass
class Run:
    """Everything :func:`setup` builds for one run."""

    cfg: TrainConfig
    task: Task
    method: Method
    student: nn.Module
    model: nn.Module  # the student as trained (DDP-wrapped on several workers)
    source: TeacherSource | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    input_key: str
    runtime: Runtime

    @property
    def inputs(self) -> tuple[str, ...]:
        needed = {self.input_key}
        if self.source is not None and getattr(self.source, "input_key", None):
            needed.add(self.source.input_key)
        return tuple(sorted(needed))


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_student(cfg: TrainConfig, task: Task) -> nn.Module:
    """The model ``cfg.model`` names, with the task's fixed kwargs (classes, scale), started from
    ``model.init_from`` when given. A classifier head stored for another number of classes (an ImageNet checkpoint
    started on CUB) is left out: the model keeps its own, freshly initialised head."""
    return build_model(cfg.model.name, {**task.model_kwargs(), **cfg.model.kwargs}, cfg.model.init_from,
                       keymap=cfg.model.init_keymap, adapt_head=True)


def param_groups(model: nn.Module, extra: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """The parameters to optimise: those the model lists in ``no_weight_decay()`` (when ``optim.no_decay``) in a
    group without weight decay; the rest, and the method's learned parts, with ``optim.weight_decay``."""
    skip = set(model.no_weight_decay()) if optim.no_decay and hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    decay += [p for p in extra.parameters() if p.requires_grad]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(optim: OptimConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if optim.name == "sgd":  # the KD literature's classification recipe
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    if optim.name == "adam":  # the SR literature's (EDSR/RCAN/SwinIR; MTKD, DVMSR)
        return torch.optim.Adam(groups, lr=optim.lr, betas=optim.betas)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def make_scheduler(optim: OptimConfig, optimizer: torch.optim.Optimizer) -> Any:
    if optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    if optim.schedule == "step":
        milestones = [max(1, int(optim.epochs * 0.5)), max(1, int(optim.epochs * 0.75))]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if optim.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(optim.milestones), gamma=optim.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


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


def setup(cfg: TrainConfig, task: Task, runtime: Runtime, source: TeacherSource | None, start_epoch: int = 0
          ) -> Run:
    """Build the method (its hyperparameters checked), the student, the teacher source and the optimiser; probe
    the output shapes (one forward of each side) so the method can build its learned parts."""
    device = runtime.device
    method = create_method(cfg.method.name, cfg.data.task, cfg.method.params)
    input_key = task.model_input or cfg.method.student_input or method.student_input
    student = build_student(cfg, task)
    if method.teacher_outputs() and source is None:
        if cfg.teacher is None:
            raise ValueError(f"method {cfg.method.name!r} distils from a teacher: set the teacher (TeacherConfig; "
                             "`raykd distill --teacher DIR`)")
        spec = TeacherSpec.from_config(cfg.teacher)
        source = InProcessTeacher(spec.build(device), method.teacher_outputs(), task.teacher_input, task.output)
    if not method.teacher_outputs():
        source = None
    probe = task.batch(np.arange(min(2, len(task))), start_epoch, device, tuple({input_key, task.teacher_input}))
    student_shapes = output_shapes(student, method.student_outputs(), tuple(probe[input_key].shape[1:]), task.output)
    teacher_shapes = {}
    if source is not None:
        source.begin_epoch(start_epoch)
        teacher_shapes = {k: tuple(v.shape[1:]) for k, v in source.request(probe, count=False)().items()}
    method.bind(student_shapes, teacher_shapes)
    student.to(device)
    method.to(device)
    amp_dtype = _amp_dtype(device, cfg.runtime.amp)
    if device.type == "cuda" and cfg.runtime.channels_last:
        student.to(memory_format=torch.channels_last)
    model = runtime.wrap_model(student)
    optimizer = make_optimizer(cfg.optim, param_groups(student, method, cfg.optim))
    return Run(cfg, task, method, student, model, source, optimizer, make_scheduler(cfg.optim, optimizer),
               torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), amp_dtype, input_key, runtime)


def _prefetched(make: Callable[[np.ndarray], dict[str, Any]], chunks: list[np.ndarray]) -> Iterator[dict[str, Any]]:
    """``make(chunk)`` for every chunk, the next one built on a background thread while the caller trains on the
    current one (numpy gathers and torch ops release the GIL)."""
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                results.put(("batch", make(chunk)))
            results.put(("done", None))
        except BaseException as err:  # re-raised in the training thread
            results.put(("error", err))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(0.01)


def train_epoch(run: Run, epoch: int, on_first_step: Callable[[], None] = lambda: None) -> dict[str, float]:
    """One epoch (0-based ``epoch``, view ``data.view_for_epoch(epoch)``): mean of every loss term, throughput."""
    cfg, rt, device = run.cfg, run.runtime, run.runtime.device
    order = shard_order(len(run.task), seed=cfg.seed, epoch=epoch, rank=rt.rank, world_size=rt.world_size,
                        groups=getattr(run.task.train_arrays, "groups", None))
    batch_size = cfg.optim.batch_size
    if cfg.optim.steps_per_epoch is not None:
        order = order[: cfg.optim.steps_per_epoch * batch_size]
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if run.source is not None:
        run.source.begin_epoch(epoch)
    batches = _prefetched(lambda idx: run.task.batch(idx, epoch, device, run.inputs), chunks)
    if cfg.runtime.progress and rt.is_main:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=len(chunks), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", leave=False)
    run.model.train()
    # running sums stay on the device: reading a loss (.item()) every step would make the host wait for the
    # device and leave it idle while the next step is launched; finiteness is checked every CHECK_EVERY steps
    sums: dict[str, torch.Tensor] = {}
    seen, checked, started = 0, 0, time.perf_counter()
    for step, batch in enumerate(batches):
        x = batch[run.input_key]
        if device.type == "cuda" and cfg.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # the teacher's answer is requested first and collected after the student's forward, so a remote
        # (live) teacher works while the student computes
        fetch = run.source.request(batch) if run.source is not None else None
        if step == 0:
            on_first_step()
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            student_out = capture(run.model, x, run.method.student_outputs(), run.task.output)
            teacher_out = fetch() if fetch is not None else {}
            losses = run.method({k: v.float() for k, v in student_out.items()}, teacher_out,
                                batch[run.task.target_key], epoch + 1)
        total = sum(losses.values())
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(total).backward()
        if rt.world_size > 1:
            average_gradients(run.method)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        n = len(x)
        seen += n
        for name, value in {**losses, "loss": total}.items():
            sums[name] = sums.get(name, 0.0) + value.detach() * n
        if (step + 1) % CHECK_EVERY == 0:
            _check_finite(sums, run, epoch, checked + 1, step + 1)
            checked = step + 1
    _check_finite(sums, run, epoch, checked + 1, len(chunks))
    elapsed = time.perf_counter() - started
    run.scheduler.step()
    return {**{f"train_{k}": float(v) / max(seen, 1) for k, v in sums.items()},
            "samples_per_s": seen * rt.world_size / max(elapsed, 1e-9)}


def _check_finite(sums: dict[str, torch.Tensor], run: Run, epoch: int, first: int, last: int) -> None:
    """Stop the run, before any such weights are saved, if a loss term became NaN or infinite."""
    if "loss" in sums and not math.isfinite(float(sums["loss"])):
        terms = {k: float(v) for k, v in sums.items()}
        raise NonFiniteLoss(f"training loss is {float(sums['loss'])} at epoch {epoch + 1}, steps {first}-{last} "
                            f"(summed terms {terms}; method {run.cfg.method.name} {run.method.params}, lr "
                            f"{run.cfg.optim.lr}): stopping before any such weights are saved; lower the learning "
                            "rate or the loss weights")


# what a resumed run may differ in without becoming another run: how long it trains (``--resume --epochs N``
# trains on), where its data lies (a moved dataset directory is the same data), what only epoch 0 reads (the
# initial weights: a resumed run starts from its checkpoint's) and how it computes (device, AMP, progress bars: a
# trial restored on another node may get another device)
RESUME_MAY_CHANGE = ("optim.epochs", "data.root", "data.val_root", "model.init_from", "model.init_keymap", "runtime")


def _leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted field path: JSON value}`` of a config's fields, nested configs flattened (``"optim.lr"``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value, path = getattr(config, f.name), prefix + f.name
        nested = dataclasses.is_dataclass(value) and not isinstance(value, type)
        out.update(_leaves(value, path + ".") if nested else {path: to_json(value)})
    return out


def _shown(leaves: dict[str, Any], key: str) -> str:
    return repr(leaves[key]) if key in leaves else "absent"


def check_resume(meta: dict[str, Any], cfg: TrainConfig, where: Path) -> None:
    """Refuse to continue a checkpoint as a different run: every config field that changes the result must
    match (all but :data:`RESUME_MAY_CHANGE`). The saved config is read back as a :class:`TrainConfig` first, so
    a field added since it was written (an older ``schema``, :data:`~raykd.models.checkpoint.META_SCHEMA`) takes
    its default and is no difference."""
    if meta_schema(meta) > META_SCHEMA:
        raise ValueError(f"cannot resume {where}: it was written by a newer raykd (meta.json schema "
                         f"{meta_schema(meta)}; this one reads up to {META_SCHEMA}); upgrade raykd or write to a new "
                         "directory")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"cannot resume {where}: its meta.json records no training config (not a checkpoint of "
                         "raykd's training loop)")
    saved = {k: v for k, v in meta["config"].items() if k not in RESUME_MAY_CHANGE}
    try:
        then = _leaves(from_json(TrainConfig, {**saved, "runtime": to_json(cfg.runtime)}, "config"))
    except (ConfigError, TypeError) as err:
        raise ValueError(f"cannot resume {where}: its config no longer reads ({err}); write to a new directory"
                         ) from None
    now = _leaves(cfg)
    keys = sorted(k for k in set(then) | set(now)
                  if not any(k == p or k.startswith(p + ".") for p in RESUME_MAY_CHANGE))
    changed = [f"{k}: {_shown(then, k)} in the checkpoint, {_shown(now, k)} now" for k in keys
               if (k in then, then.get(k)) != (k in now, now.get(k))]
    if changed:
        raise ValueError(f"cannot resume {where} as a different run: " + "; ".join(changed) +
                         ". Resume with the same settings, or write to a new directory")


def train(cfg: TrainConfig, *, task: Task | None = None, teacher: TeacherSource | None = None,
          runtime: Runtime | None = None, checkpoint_dir: str | Path | None = None,
          resume_from: str | Path | None = None, report: Report | None = None, started: float | None = None,
          ) -> dict[str, Any]:
    """Train ``cfg.model`` with ``cfg.method`` and return the last epoch's metrics (``best_<metric>`` included).

    ``task``: the run's data (default: built from ``cfg.data``); ``teacher``: the source of teacher outputs (default:
    ``cfg.teacher`` run in this process). ``checkpoint_dir`` receives a checkpoint after every epoch (main worker
    only); ``resume_from`` continues a run from such a checkpoint, reproducing the uninterrupted run and its
    counters. ``started``: when the caller started (``time.time()``), for ``startup_s``, the time to the first
    training step.
    """
    started = time.time() if started is None else started
    rt = runtime or Runtime(device=resolve_device(cfg.runtime.device))
    task = task or build_task(cfg.data, cfg.seed)
    seed_everything(cfg.seed)
    start_epoch, best, metrics, offsets = 0, -math.inf, {}, dict.fromkeys(COUNTERS, 0)
    meta = None
    if resume_from is not None:
        meta = read_meta(resume_from)
        check_resume(meta, cfg, Path(resume_from))
        start_epoch = meta["epoch"]
    run = setup(cfg, task, rt, teacher, min(start_epoch, cfg.optim.epochs - 1))
    metric = task.metric
    if meta is not None:
        load_checkpoint(resume_from, model=run.student, restore={"optimizer": run.optimizer, "scheduler": run.scheduler,
                                                                  "scaler": run.scaler, "method": run.method})
        best = meta.get(f"best_{metric}", -math.inf)
        offsets = {k: int(meta.get(k, 0)) for k in COUNTERS}
        metrics = {k: v for k, v in meta.items() if k not in ("config", "files", "model", "model_kwargs", "schema")}
    startup: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.optim.epochs):
        metrics = train_epoch(run, epoch, lambda: startup.setdefault("startup_s", time.time() - started))
        metrics.update(task.evaluate(run.model, rt.device, run.input_key))
        best = max(best, metrics[metric])
        counters = rt.all_sum(run.source.counters() if run.source is not None else dict.fromkeys(COUNTERS, 0))
        # the precision of the teacher outputs this student learnt from is part of what the run was
        # (raykd.teachers.precision): checkpoints and sweep results carry it
        metrics.update({"epoch": epoch + 1, f"best_{metric}": best, "lr": run.optimizer.param_groups[0]["lr"],
                        "task_builds": task_builds(), **startup,
                        **{k: offsets[k] + counters[k] for k in COUNTERS},
                        "teacher_precision": run.source.precision if run.source is not None else None})
        saved = None
        if checkpoint_dir is not None and rt.is_main:
            # a model's variant (DVMSR's ViMM residual) goes into its kwargs: the weights alone cannot tell it
            variant = dict(getattr(run.student, "variant", None) or {})
            meta_out = {"model": cfg.model.name, "model_kwargs": {**task.model_kwargs(), **cfg.model.kwargs, **variant},
                        "variant": variant or None, "config": to_json(cfg), "method_params": run.method.params,
                        **metrics}
            saved = save_checkpoint(checkpoint_dir, model=run.student, meta=meta_out, state={
                "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(), "method": run.method.state_dict()})
        if report is not None:
            report(dict(metrics), saved)
    return metrics

