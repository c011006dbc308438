"""MTKD stage 1: the knowledge aggregator, trained on N frozen SR teachers' outputs, and the aggregated teacher.

Jiang et al., "MTKD: Multi-Teacher Knowledge Distillation for Image Super-Resolution", ECCV 2024. Stage 1
(Sec. 3.1) fits the knowledge aggregator (:mod:`raykd.models.aggregator`) to the ground truth on the concatenated
outputs of N frozen SR teachers; stage 2 (Sec. 3.2, the ``mtkd`` method of :mod:`raykd.methods.sr`) distils the
student from the aggregator's image ``I_MT``. To the rest of raykd the aggregated teacher is one more SR teacher:
:class:`~raykd.models.aggregator.MTKDTeacher` (registered as ``mtkd_teacher``) runs the N teachers, in name
order, and the aggregator, and its weights are one state dict in a raykd checkpoint directory, so a sweep's teacher
service serves it like any other teacher.

Where the teachers' outputs come from: the sweep's **teacher service** (:mod:`raykd.teachers.service`), not the
training process. Each teacher's whole-image table (one row per training image, :class:`TeacherTable`) is looked
up in the persistent store by its content key and computed only when absent, by that teacher's own actors (each
with its share of the cluster's CPUs/GPUs, the N teachers at once, tiled when ``data.tile`` > 0). The same keys
are what the stage-2 sweep's service asks for, so the best single teacher's table, which L1-KD distils from, is
read back from the store instead of being computed again, and a re-run of stage 1 with another aggregator or
learning rate computes no teacher output at all. (Computing them in-process with ``run_sr_teacher`` over
``SRBatches.whole`` would be simpler, but would run three large teachers on the driver's device, one after the
other, and recompute them for every stage-1 configuration and again in stage 2.)

:func:`train_stage1` trains the aggregator on aligned (teacher patches, HR patch) batches: every epoch draws fresh
patch views (:class:`~raykd.data.views.PatchViews`, the student's own replayable views), and each teacher's patch
is cut from its whole-image row with the same box and orientation (:class:`StoredTeacher`). It then measures each
teacher and the aggregated teacher on the held-out images with :meth:`SRTask.evaluate` (the sweep's val set and
PSNR convention) and returns the composite checkpoint. :func:`prepare_mtkd_teacher` does all of it once per set
of inputs and keeps the result in the trained-teacher store (:class:`TrainedTeachers`), keyed by the teachers'
identities (weights' sha256 and configs), the aggregator's kwargs, the decoded data and the stage-1 config; a
second run reuses it.

Optimisation (:func:`train_aggregator`): Adam with betas (0.9, 0.999), no weight decay, L1 to the ground truth, as
the paper. The learning rate defaults to the paper's 1e-4 (:data:`PAPER_LR`); the authors' released training
config uses 2e-4 (:data:`OFFICIAL_LR`) with the rate halved at 200k and 400k of its 500k iterations, which raykd
scales to epochs: ``schedule="step"`` halves the rate after 40% and 80% of the epochs (:func:`stage1_milestones`).
The paper's number is the default because it is the one the paper reports its results with; the official one is a
flag away (``sweeps/mtkd_div2k.py --stage1-lr 2e-4``).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from raykd.config import (DataConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherServiceConfig, TrainConfig,
                          to_json)
from raykd.data.store import store_root
from raykd.models import create_model
from raykd.models.aggregator import MTKDTeacher
from raykd.models.checkpoint import META_FILE, read_meta
from raykd.teachers.precision import DEFAULT_PRECISION
from raykd.teachers.sources import StoredTeacher
from raykd.teachers.spec import TeacherSpec, sorted_specs
from raykd.teachers.store import TeacherTable
from raykd.teachers.trained import TrainedTeachers
from raykd.train.checkpoint import save_checkpoint
from raykd.train.loop import resolve_device, seed_everything, shard_order
from raykd.train.tasks import SRTask, build_task

__all__ = ["COMPOSITE_MODEL", "PAPER_LR", "OFFICIAL_LR", "Stage1Result", "AlignedPatches", "stage1_config",
           "stage1_milestones", "train_aggregator", "train_stage1", "prepare_mtkd_teacher"]

COMPOSITE_MODEL = "mtkd_teacher"
PAPER_LR = 1e-4  # MTKD's paper (Sec. 4.1)
OFFICIAL_LR = 2e-4  # the authors' released stage-1 training config
# the released config halves the rate at 200k and 400k of 500k iterations: at 40% and 80% of the training
MILESTONE_FRACTIONS = (0.4, 0.8)
GAMMA = 0.5


def stage1_milestones(epochs: int) -> list[int]:
    """The epochs after which ``schedule="step"`` halves the stage-1 learning rate: 40% and 80% of ``epochs``
    (the released config's 200k and 400k of 500k iterations), at least 1 and distinct."""
    return sorted({max(1, round(f * epochs)) for f in MILESTONE_FRACTIONS})


def _scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int) -> Any:
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=stage1_milestones(epochs), gamma=GAMMA)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"stage-1 schedule {schedule!r}: expected 'step' (MTKD's halving), 'cosine' or 'constant'")


def stage1_config(data: DataConfig, *, epochs: int, lr: float = PAPER_LR, batch_size: int = 16,
                  patch_size: int = 64, patches_per_image: int | None = None, schedule: str = "step",
                  aggregator_kwargs: Mapping[str, Any] | None = None, steps_per_epoch: int | None = None,
                  seed: int = 0, runtime: RuntimeConfig | None = None) -> TrainConfig:
    """Stage 1 as a :class:`TrainConfig`: the aggregator (``mtkd_aggregator`` with ``aggregator_kwargs`` over its
    paper configuration) on ``data``'s images with LR patches of ``patch_size`` (the paper: 64, i.e. 256-pixel
    HR patches at x4), Adam (0.9, 0.999) without weight decay at ``lr`` (default the paper's 1e-4), batch
    ``batch_size`` (the released config: 16), ``schedule`` "step" (halved at 40% and 80% of the epochs)."""
    data = dataclasses.replace(data, patch_size=patch_size,
                               patches_per_image=patches_per_image or data.patches_per_image)
    return TrainConfig(model=ModelConfig("mtkd_aggregator", dict(aggregator_kwargs or {})), data=data,
                       optim=OptimConfig(name="adam", lr=lr, betas=(0.9, 0.999), weight_decay=0.0, schedule=schedule,
                                         epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch),
                       runtime=runtime or RuntimeConfig(), seed=seed)


def train_aggregator(
    model: nn.Module,
    batches: Any,
    *,
    epochs: int,
    lr: float,
    device: str | torch.device,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    schedule: str = "step",
    progress: Callable[[int, float, float], None] | None = None,
) -> dict[str, Any]:
    """MTKD stage 1's optimisation (Sec. 3.1): fit the aggregator to the ground truth with ``L1(agg(T), HR)``.

    ``batches`` is re-iterated once per epoch (each pass may draw new views) and yields ``(teacher_outputs, hr)``:
    the N ``(B, 3, sH, sW)`` teacher outputs in teacher-name order and the ``(B, 3, sH, sW)`` ground truth. Adam
    with ``betas`` (the paper's 0.9, 0.999) and ``weight_decay`` (none in the paper) at ``lr``; ``schedule``:
    ``"step"`` halves the rate after 40% and 80% of the epochs (the released config's 200k/400k of 500k
    iterations, :func:`stage1_milestones`), ``"cosine"`` anneals it, ``"constant"`` keeps it. ``progress(epoch,
    mean_l1, lr)`` is called after every epoch (1-based; ``lr`` the rate that epoch trained with). The model is
    left on ``device`` in eval mode, ready to serve as a frozen teacher.

    Returns ``{"loss": last epoch's mean L1, "epoch_losses": [...], "lrs": [...], "steps", "samples"}``.
    """
    if epochs < 1:
        raise ValueError(f"train_aggregator: epochs={epochs} must be >= 1")
    device = torch.device(device)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    scheduler = _scheduler(optimizer, schedule, epochs)
    epoch_losses: list[float] = []
    lrs: list[float] = []
    steps = samples = 0
    for epoch in range(1, epochs + 1):
        rate = optimizer.param_groups[0]["lr"]
        total, seen = 0.0, 0
        for outputs, hr in batches:
            x = torch.cat([t.to(device, torch.float32, non_blocking=True) for t in outputs], dim=1)
            hr = hr.to(device, torch.float32, non_blocking=True)
            loss = F.l1_loss(model(x), hr)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_aggregator: the L1 loss is {loss.item()} at epoch {epoch}, step "
                                         f"{steps + 1} (lr {rate:g}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * hr.shape[0]
            seen += hr.shape[0]
            steps += 1
        if seen == 0:
            raise ValueError("train_aggregator: `batches` yielded no batch; it must be re-iterable (a list or an "
                             "object whose __iter__ starts a new epoch, not a generator exhausted after one pass)")
        scheduler.step()
        samples += seen
        epoch_losses.append(total / seen)
        lrs.append(rate)
        if progress is not None:
            progress(epoch, epoch_losses[-1], rate)
    model.eval()
    return {"loss": epoch_losses[-1], "epoch_losses": epoch_losses, "lrs": lrs, "steps": steps, "samples": samples}


class AlignedPatches:
    """Stage-1 batches ``([teacher patch of each teacher], HR patch)``, re-iterable: pass ``e`` is epoch ``e``.

    Each pass shuffles the training items as the trainer does (:func:`shard_order`, capped at
    ``optim.steps_per_epoch`` batches) and draws that epoch's patch views (:meth:`SRTask.batch`: fresh views every
    epoch unless ``data.reuse_views``); each teacher's patch is cut from its whole-image row with the patch's box and
    oriented like it (:class:`StoredTeacher`), so LR, HR and teacher patches stay aligned pixel for pixel.
    """

    def __init__(self, task: SRTask, sources: Sequence[StoredTeacher], cfg: TrainConfig, device: torch.device):
        self.task, self.sources, self.cfg, self.device = task, list(sources), cfg, device
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        optim = self.cfg.optim
        order = shard_order(len(self.task), seed=self.cfg.seed, epoch=epoch, rank=0, world_size=1)
        if optim.steps_per_epoch is not None:
            order = order[: optim.steps_per_epoch * optim.batch_size]
        for start in range(0, len(order), optim.batch_size):
            batch = self.task.batch(order[start:start + optim.batch_size], epoch, self.device, ("lr",))
            yield [source.request(batch, count=False)()["image"] for source in self.sources], batch["hr"]


@dataclass
class Stage1Result:
    """What stage 1 produced: the aggregated teacher's spec and how it and each teacher score on held-out images.

    ``heldout`` maps every teacher name and ``spec.name`` (the aggregated teacher) to ``{"val_psnr", "val_ssim"}``
    (:meth:`SRTask.evaluate` on the data's val images); ``teachers`` are the names in aggregator order;
    ``training`` the aggregator's losses and learning rates per epoch; ``reused``: read back from the store."""

    spec: TeacherSpec
    teachers: list[str]
    heldout: dict[str, dict[str, float]]
    training: dict[str, Any]
    reused: bool = False

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str = "mtkd", reused: bool = False) -> "Stage1Result":
        meta = read_meta(path)
        if meta.get("model") != COMPOSITE_MODEL:
            raise ValueError(f"{Path(path) / META_FILE}: model is {meta.get('model')!r}, not an MTKD stage-1 "
                             f"checkpoint ({COMPOSITE_MODEL!r})")
        heldout = dict(meta["heldout"])
        heldout[name] = heldout.pop(meta["name"])  # the aggregate is listed under the name it is opened with
        return cls(TeacherSpec.from_checkpoint(path, name), list(meta["teachers"]), heldout, meta["stage1"], reused)

    @property
    def best_teacher(self) -> str:
        """The single teacher with the highest held-out PSNR (what L1-KD distils from in a comparison)."""
        return max(self.teachers, key=lambda t: self.heldout[t]["val_psnr"])

    @property
    def teacher_mean_psnr(self) -> float:
        return float(np.mean([self.heldout[t]["val_psnr"] for t in self.teachers]))

    def table(self) -> str:
        """Held-out PSNR/SSIM of every teacher, their mean and the aggregated teacher, as a markdown table."""
        best = self.heldout[self.best_teacher]["val_psnr"]
        agg = self.heldout[self.spec.name]
        lines = ["| teacher | PSNR (dB) | SSIM |", "|---|---|---|"]
        lines += [f"| {t} | {self.heldout[t]['val_psnr']:.2f} | {self.heldout[t]['val_ssim']:.4f} |"
                  for t in self.teachers]
        lines.append(f"| mean of teachers | {self.teacher_mean_psnr:.2f} | "
                     f"{np.mean([self.heldout[t]['val_ssim'] for t in self.teachers]):.4f} |")
        lines.append(f"| {self.spec.name} (aggregator) | {agg['val_psnr']:.2f} | {agg['val_ssim']:.4f} |")
        lines.append(f"\naggregator vs best teacher ({self.best_teacher}): {agg['val_psnr'] - best:+.2f} dB; "
                     f"vs teachers' mean: {agg['val_psnr'] - self.teacher_mean_psnr:+.2f} dB")
        return "\n".join(lines)


def _check(specs: Sequence[TeacherSpec], cfg: TrainConfig, name: str) -> None:
    if cfg.data.task != "sr":
        raise ValueError(f"MTKD stage 1: data.task is {cfg.data.task!r}; stage 1 needs SR data (task='sr')")
    if name in {s.name for s in specs}:
        raise ValueError(f"MTKD stage 1: name={name!r} is also a teacher's name; pick another for the aggregate")
    if not specs:
        raise ValueError("MTKD stage 1 needs at least one teacher")
    if cfg.optim.name != "adam":
        raise ValueError(f"MTKD stage 1 trains with Adam (the paper's); optim.name is {cfg.optim.name!r}")
    for spec in specs:
        scale = spec.model_kwargs.get("scale", cfg.data.scale)
        if scale != cfg.data.scale:
            raise ValueError(f"MTKD stage 1: teacher {spec.name!r} ({spec.checkpoint}) is x{scale} but the data is "
                             f"x{cfg.data.scale}")


def stage1_document(specs: Sequence[TeacherSpec], cfg: TrainConfig, train_key: str, val_key: str,
                    precision: str = DEFAULT_PRECISION) -> dict[str, Any]:
    """What the stage-1 checkpoint's store key hashes: the teachers' identities (weights' sha256 and configs, in
    name order), the aggregator's kwargs, the decoded train and held-out data, the precision of the teachers'
    tables it learns from, and the stage-1 config (but its runtime: device and progress bars do not change what is
    trained)."""
    return {"stage": "mtkd_stage1", "teachers": [s.identity() for s in sorted_specs(list(specs))],
            "aggregator_kwargs": dict(cfg.model.kwargs), "data": {"train": train_key, "val": val_key},
            "teacher_precision": precision, "config": to_json(dataclasses.replace(cfg, runtime=RuntimeConfig()))}


def train_stage1(teachers: Sequence[TeacherSpec], cfg: TrainConfig, task: SRTask,
                 tables: Mapping[str, TeacherTable], *, name: str = "mtkd",
                 progress: Callable[[int, float, float], None] | None = None) -> tuple[dict[str, bytes], dict]:
    """Train the aggregator ``cfg`` describes on the teachers' whole-image ``tables`` (``{teacher name: table
    holding "image"}``), measure every teacher and the aggregated teacher on ``task``'s held-out images, and return
    the composite checkpoint's files and its metadata (``heldout``, ``stage1``)."""
    specs = sorted_specs(list(teachers))
    _check(specs, cfg, name)
    missing = [s.name for s in specs if s.name not in tables]
    if missing:
        raise KeyError(f"MTKD stage 1: no whole-image table for teachers {missing}")
    device = resolve_device(cfg.runtime.device)
    seed_everything(cfg.seed)
    aggregator = create_model(cfg.model.name, num_teachers=len(specs), scale=cfg.data.scale, **cfg.model.kwargs)
    sources = []
    for spec in specs:
        table = tables[spec.name]
        source = StoredTeacher(lambda epoch, table=table: table, ("image",), scale=cfg.data.scale)
        source.begin_epoch(0)  # one whole-image table serves every epoch
        sources.append(source)
    started = time.perf_counter()
    training = train_aggregator(aggregator, AlignedPatches(task, sources, cfg, device), epochs=cfg.optim.epochs,
                                lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
                                schedule=cfg.optim.schedule, device=device, progress=progress)
    training["train_s"] = time.perf_counter() - started

    nets, heldout = [], {}
    for spec in specs:
        nets.append(spec.build(device))
        heldout[spec.name] = task.evaluate(nets[-1], device)
    composite = MTKDTeacher(nets, aggregator).eval()
    heldout[name] = task.evaluate(composite, device)

    model_kwargs = {"teachers": [{"name": s.name, "model": s.model, "model_kwargs": s.model_kwargs} for s in specs],
                    "aggregator_kwargs": dict(cfg.model.kwargs), "scale": cfg.data.scale}
    meta = {"model": COMPOSITE_MODEL, "model_kwargs": model_kwargs, "name": name,
            "teachers": [s.name for s in specs],
            "teacher_weights_sha256": {s.name: s.weights_sha256 for s in specs},
            "data": {"train": task.train_arrays.key, "val": task.val_arrays.key}, "heldout": heldout,
            "stage1": {**training, "config": to_json(cfg)}}
    with tempfile.TemporaryDirectory(prefix="raykd-mtkd-stage1-") as tmp:
        saved = save_checkpoint(Path(tmp) / "checkpoint", model=composite, meta=meta)
        files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    return files, meta


def _print_progress(epoch: int, loss: float, lr: float) -> None:
    print(f"MTKD stage 1: aggregator epoch {epoch}: L1 {loss:.4f} (lr {lr:.3g})", flush=True)


def _stage1_task(specs: list[TeacherSpec], cfg: TrainConfig, splits: dict[str, Any], tables: dict[str, Any],
                 name: str) -> tuple[dict[str, bytes], dict]:
    """:func:`train_stage1` in a Ray task: the splits and tables are object-store references."""
    import ray

    task = build_task(cfg.data, cfg.seed, {split: ray.get(ref) for split, ref in splits.items()})
    return train_stage1(specs, cfg, task, {n: ray.get(ref) for n, ref in tables.items()}, name=name,
                        progress=_print_progress)


def prepare_mtkd_teacher(
    teachers: Sequence[TeacherSpec],
    cfg: TrainConfig,
    splits: Mapping[str, Any],
    *,
    cache_dir: str | os.PathLike,
    name: str = "mtkd",
    service: TeacherServiceConfig | None = None,
    resources: Mapping[str, float] | None = None,
    sweep_name: str = "mtkd",
) -> Stage1Result:
    """The aggregated MTKD teacher: read back from the trained-teacher store under ``cache_dir`` when an earlier run
    made it from the same inputs (:func:`stage1_document`), else made now and stored there.

    ``splits``: the decoded train and val splits as object-store references (``raykd.tune.sweep.decoded_splits``);
    needs a connected Ray. The teachers' whole-image tables come from a teacher service (``service``: its actors'
    resources; default one replica per teacher sharing the cluster's CPUs, ``mode="stored"``) over the persistent
    store ``<cache_dir>/store`` the sweep's service uses too. The aggregator trains in this process (``resources``
    ``None``) or in one Ray task with ``resources`` (``{"num_cpus": ..., "num_gpus": ...}``), while the service
    holds the tables in the object store."""
    import ray

    from raykd.teachers.service import TeacherRequest, start_service, stop_service

    specs = sorted_specs(list(teachers))
    _check(specs, cfg, name)
    train_arrays, val_arrays = ray.get(splits["train"]), ray.get(splits["val"])
    if service is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        service = TeacherServiceConfig(num_cpus=min(1.0, cpus / len(specs)), mode="stored")
    elif service.mode != "stored":
        service = dataclasses.replace(service, mode="stored")
    store = TrainedTeachers(cache_dir)
    target = store.path(COMPOSITE_MODEL, stage1_document(specs, cfg, train_arrays.key, val_arrays.key,
                                                         service.precision))
    if store.find(target, name) is not None:
        print(f"MTKD stage 1: reusing the aggregated teacher {target}", flush=True)
        return Stage1Result.from_checkpoint(target, name, reused=True)
    print(f"MTKD stage 1: {len(specs)} teachers ({', '.join(s.name for s in specs)}), aggregator "
          f"{cfg.optim.epochs} epochs at lr {cfg.optim.lr:g} -> {target}", flush=True)
    actor = start_service([TeacherRequest(s, ("image",)) for s in specs], cfg.data, splits["train"], 1, service,
                          store_root(cache_dir), f"{sweep_name}-stage1")
    try:
        ray.get(actor.start.remote([cfg.seed]))
        tables = {s.name: ray.get(actor.table.remote(s.name, cfg.seed, 0))[0] for s in specs}
        stats = ray.get(actor.statistics.remote())
        print("MTKD stage 1: teacher tables " + ", ".join(
            f"{n}: {'computed' if st['tables_built'] else 'from the store'}" for n, st in stats.items()), flush=True)
        if resources is None:
            task = build_task(cfg.data, cfg.seed, {"train": train_arrays, "val": val_arrays})
            files, _ = train_stage1(specs, cfg, task, {n: ray.get(ref) for n, ref in tables.items()}, name=name,
                                    progress=_print_progress)
        else:
            files, _ = ray.get(ray.remote(**dict(resources))(_stage1_task).remote(specs, cfg, dict(splits), tables,
                                                                                   name))
    finally:
        stop_service(actor)  # (releases the teachers' weights the driver pinned for restarts, too)
    store.commit(files, target, name)
    return Stage1Result.from_checkpoint(target, name)
