"""MTKD's pipeline around the loss: stage 1 (the knowledge aggregator) and the aggregated teacher it produces.

Jiang et al., "MTKD: Multi-Teacher Knowledge Distillation for Image Super-Resolution", ECCV 2024. Stage 1
(Sec. 3.1) fits the knowledge aggregator to the ground truth on the concatenated outputs of N frozen SR teachers;
stage 2 (Sec. 3.2, the ``mtkd`` method of :mod:`raykd.methods.sr`) distils the student from the aggregator's
image ``I_MT``.

To the rest of raykd the aggregated teacher is one more SR teacher: :class:`MTKDTeacher` (registered as
``mtkd_teacher``) runs the N teachers, in name order, and the aggregator on an LR image, and its weights are one
safetensors state dict (``teachers.<i>.*``, ``aggregator.*``) in a raykd checkpoint directory. The standard teacher
service therefore computes its whole-image outputs once (tiled), caches them, and serves crops to every trial.

:func:`train_stage1` gets the N teachers' whole-image outputs from that same service and cache, trains the
aggregator on aligned (teacher patches, HR patch) batches cut with the SR data's replayable views, measures every
teacher and the aggregated one on the held-out images with :meth:`raykd.train.sr_task.SRTask.evaluate`, and writes
the composite checkpoint. :func:`prepare_mtkd_teacher` does so once per set of inputs and reuses it afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn
from torch import Tensor
from torch.utils.data import default_collate

from raykd.models.aggregator import KnowledgeAggregator, mtkd_aggregator, train_aggregator
from raykd.models.registry import create_model, register_model
from raykd.teachers.specs import TeacherSpec, sorted_specs
from raykd.train.checkpoint import META_FILE, read_meta, save_checkpoint
from raykd.train.config import TrainConfig
from raykd.train.sr_task import SRCachedTeacher, SRTask
from raykd.train.tasks import build_task

__all__ = ["MTKDTeacher", "Stage1Result", "mtkd_teacher", "prepare_mtkd_teacher", "train_stage1"]

COMPOSITE_MODEL = "mtkd_teacher"
_TEACHER_KEYS = frozenset({"name", "model", "model_kwargs"})


class MTKDTeacher(nn.Module):
    """The aggregated MTKD teacher as one SR model: ``I_MT = agg(T_1(lr), ..., T_N(lr))`` (MTKD Sec. 3.1).

    ``teachers`` are the N SR networks in teacher-name order (the aggregator's channel order); ``forward`` takes an
    LR batch ``(B, 3, h, w)`` in [0, 1] and returns the aggregated ``(B, 3, s*h, s*w)`` image. It is built to be
    served frozen (:meth:`raykd.teachers.specs.TeacherSpec.build` puts it in eval mode without gradients).
    """

    def __init__(self, teachers: Sequence[nn.Module], aggregator: KnowledgeAggregator) -> None:
        super().__init__()
        if len(teachers) != aggregator.num_teachers:
            raise ValueError(f"MTKDTeacher: {len(teachers)} teachers but the aggregator was built for "
                             f"num_teachers={aggregator.num_teachers}")
        self.teachers = nn.ModuleList(teachers)
        self.aggregator = aggregator
        self.scale = aggregator.scale

    def forward(self, x: Tensor) -> Tensor:
        return self.aggregator([teacher(x) for teacher in self.teachers])


@register_model
def mtkd_teacher(teachers: Sequence[Mapping[str, Any]], aggregator_kwargs: Mapping[str, Any] | None = None,
                 scale: int = 4) -> MTKDTeacher:
    """The aggregated MTKD teacher (:class:`MTKDTeacher`): ``teachers`` lists the N SR networks in name order as
    ``{"model": registry name, "model_kwargs": {...}, "name": teacher name (informative)}``; the aggregator is
    ``mtkd_aggregator(num_teachers=N, scale=scale, **aggregator_kwargs)``."""
    if not teachers:
        raise ValueError("mtkd_teacher: teachers is empty; give one {'model': ..., 'model_kwargs': ...} per teacher")
    nets = []
    for i, entry in enumerate(teachers):
        unknown = sorted(set(entry) - _TEACHER_KEYS)
        if unknown or "model" not in entry:
            raise ValueError(f"mtkd_teacher: teachers[{i}] = {dict(entry)} must have 'model' and may have "
                             f"{sorted(_TEACHER_KEYS - {'model'})}; unknown keys: {unknown}")
        kwargs = dict(entry.get("model_kwargs") or {})
        if kwargs.setdefault("scale", scale) != scale:
            raise ValueError(f"mtkd_teacher: teachers[{i}] ({entry['model']}) has scale={kwargs['scale']} but the "
                             f"aggregated teacher is x{scale}")
        nets.append(create_model(entry["model"], **kwargs))
    return MTKDTeacher(nets, mtkd_aggregator(len(nets), scale, **dict(aggregator_kwargs or {})))


@dataclass
class Stage1Result:
    """What stage 1 produced: the aggregated teacher's spec and how it and each teacher score on held-out images.

    ``heldout`` maps every teacher name and ``spec.name`` (the aggregated teacher) to ``{"val_psnr", "val_ssim"}``
    (:meth:`SRTask.evaluate` on the data config's val images); ``teachers`` are the names in aggregator order.
    """

    spec: TeacherSpec
    teachers: list[str]
    heldout: dict[str, dict[str, float]]
    training: dict[str, Any]

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str = "mtkd") -> "Stage1Result":
        meta = read_meta(path)
        if meta.get("model") != COMPOSITE_MODEL:
            raise ValueError(f"{Path(path) / META_FILE}: model is {meta.get('model')!r}, not an MTKD stage-1 "
                             f"checkpoint ({COMPOSITE_MODEL!r})")
        heldout = dict(meta["heldout"])
        heldout[name] = heldout.pop(meta["name"])  # the aggregate is listed under the name it is opened with
        return cls(TeacherSpec.from_checkpoint(path, name), list(meta["teachers"]), heldout, meta["stage1"])

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


class _AlignedPatches:
    """Stage-1 batches ``([teacher patch of each teacher], HR patch)``, re-iterable: every pass is the next epoch,
    with the views the student's loader would draw in that epoch (the same shuffle and ``steps_per_epoch`` cap)."""

    def __init__(self, task: SRTask, sources: Sequence[SRCachedTeacher], cfg: TrainConfig,
                 order: Callable[..., list[int]]) -> None:
        self.task, self.sources, self.cfg, self.order = task, list(sources), cfg, order
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        train = self.task.train
        train.set_epoch(epoch)
        order = self.order(len(train), seed=self.cfg.seed, epoch=epoch, rank=0, world_size=1)
        if self.cfg.steps_per_epoch is not None:
            order = order[: self.cfg.steps_per_epoch * self.cfg.batch_size]
        for start in range(0, len(order), self.cfg.batch_size):
            batch = default_collate([train[i] for i in order[start:start + self.cfg.batch_size]])
            yield [source.request(batch)()["logits"] for source in self.sources], batch["hr"]


def _check_data(data: TrainConfig, specs: Sequence[TeacherSpec]) -> None:
    if data.task != "sr":
        raise ValueError(f"train_stage1: data.task is {data.task!r}; MTKD stage 1 needs an SR data config "
                         "(task='sr')")
    for spec in specs:
        teacher_scale = spec.model_kwargs.get("scale", data.scale)
        if teacher_scale != data.scale:
            raise ValueError(f"train_stage1: teacher {spec.name!r} ({spec.checkpoint}) is x{teacher_scale} but the "
                             f"data is x{data.scale}")


def train_stage1(
    teachers: Sequence[TeacherSpec],
    data: TrainConfig,
    out: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike,
    aggregator_kwargs: Mapping[str, Any] | None = None,
    name: str = "mtkd",
    num_cpus: float | None = None,
    num_gpus: float = 0,
    progress: Callable[[int, float], None] | None = None,
) -> Stage1Result:
    """MTKD stage 1: train the knowledge aggregator on the teachers' cached outputs and write the composite teacher.

    Args:
        teachers: the N frozen SR teachers (used in name order).
        data: SR config (``task="sr"``) of the stage-1 training images, the held-out (val) images, the scale and
            tiling, and the optimisation: ``epochs``, ``lr`` (the paper: 2e-4), ``batch_size``, ``patch_size``
            (LR side; the paper: 64 at x4), ``patches_per_image``, ``steps_per_epoch``, ``seed``, ``device``.
        out: the composite checkpoint directory to write (``TeacherSpec.from_checkpoint(out)`` opens it).
        cache_dir: the teacher cache (the sweep's ``cache_dir``): outputs already there are not recomputed.
        aggregator_kwargs: overrides of :func:`raykd.models.aggregator.mtkd_aggregator`'s paper configuration.
        name: the aggregated teacher's name (its cache entries and results carry it).
        num_cpus, num_gpus: resources of each teacher actor; all N run at once, so the default CPU share is
            ``min(1, cluster CPUs / N)``.
        progress: ``progress(epoch, mean L1)`` after every aggregator epoch.

    Needs a connected Ray (:func:`raykd.tune.driver.connect`). The N cached tables are held in memory while the
    aggregator trains (float16 whole images: about 14 GB per teacher for DIV2K's 800 training images at x4).
    Returns the :class:`Stage1Result`.
    """
    # imported here: raykd.train.loop imports raykd.methods, whose package imports this module
    import ray

    from raykd.teachers.pool import TeacherService
    from raykd.train.loop import resolve_device, seed_everything, shard_order

    specs = sorted_specs(list(teachers))
    if name in {s.name for s in specs}:
        raise ValueError(f"train_stage1: name={name!r} is also a teacher's name; pick another for the aggregate")
    _check_data(data, specs)
    cfg = TrainConfig.from_dict({**data.to_dict(), "check_data": False})
    device = resolve_device(cfg.device)
    task = build_task(cfg)
    if num_cpus is None:
        num_cpus = min(1.0, ray.cluster_resources().get("CPU", 1.0) / len(specs))

    service = TeacherService(specs, cfg, Path(cache_dir).expanduser(), num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        handles = service.handles(["logits"], mode="cached")
        sources = [task.cached_teacher(ray.get(handles[s.name].table), ["logits"]) for s in specs]
    finally:
        service.shutdown()

    seed_everything(cfg.seed)
    aggregator = mtkd_aggregator(len(specs), cfg.scale, **dict(aggregator_kwargs or {}))
    training = train_aggregator(aggregator, _AlignedPatches(task, sources, cfg, shard_order), epochs=cfg.epochs,
                                lr=cfg.lr, device=device, progress=progress)

    nets, heldout = [], {}
    for spec in specs:
        nets.append(spec.build(device))
        heldout[spec.name] = task.evaluate(nets[-1], device)
    composite = MTKDTeacher(nets, aggregator).eval()
    heldout[name] = task.evaluate(composite, device)

    model_kwargs = {"teachers": [{"name": s.name, "model": s.model, "model_kwargs": s.model_kwargs} for s in specs],
                    "aggregator_kwargs": dict(aggregator_kwargs or {}), "scale": cfg.scale}
    meta = {"model": COMPOSITE_MODEL, "model_kwargs": model_kwargs, "name": name, "teachers": [s.name for s in specs],
            "teacher_weights_sha256": {s.name: s.identity()["weights_sha256"] for s in specs},
            "data_fingerprint": task.fingerprint, "heldout": heldout,
            "stage1": {**training, "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
                       "patch_size": cfg.patch_size, "patches_per_image": cfg.patches_per_image, "seed": cfg.seed}}
    save_checkpoint(out, model=composite, meta=meta)
    return Stage1Result(TeacherSpec.from_checkpoint(out, name), [s.name for s in specs], heldout, meta["stage1"])


def prepare_mtkd_teacher(
    teachers: Sequence[TeacherSpec],
    data: TrainConfig,
    *,
    cache_dir: str | os.PathLike,
    aggregator_kwargs: Mapping[str, Any] | None = None,
    name: str = "mtkd",
    **stage1: Any,
) -> Stage1Result:
    """:func:`train_stage1` into ``<cache_dir>/teachers/mtkd_teacher-<key>``, or the result an earlier run left
    there. The key hashes every input of stage 1: the teachers' weights and configs, the aggregator's kwargs, the
    data config (but its device) and the training images' fingerprint. ``stage1`` goes to :func:`train_stage1`."""
    specs = sorted_specs(list(teachers))
    _check_data(data, specs)
    fingerprint = build_task(TrainConfig.from_dict({**data.to_dict(), "check_data": False})).fingerprint
    record = {"teachers": [s.identity() for s in specs], "aggregator_kwargs": dict(aggregator_kwargs or {}),
              "data": {k: v for k, v in data.to_dict().items() if k not in ("device", "num_workers", "check_data")},
              "fingerprint": fingerprint}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = Path(cache_dir).expanduser() / "teachers" / f"{COMPOSITE_MODEL}-{digest}"
    if (target / META_FILE).is_file():
        print(f"reusing MTKD stage 1 {target}")
        return Stage1Result.from_checkpoint(target, name)
    return train_stage1(specs, data, target, cache_dir=cache_dir, aggregator_kwargs=aggregator_kwargs, name=name,
                        **stage1)
