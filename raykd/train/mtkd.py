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

:func:`train_stage1` trains the aggregator through raykd's one training loop (:func:`raykd.train.loop.train`, as
every teacher and student): an :class:`AggregationTask` makes the aligned (teacher patches, HR patch) batches (every
epoch draws fresh patch views, the student's own replayable views, and each teacher's patch is cut from its
whole-image row with the same box and orientation, :class:`StoredTeacher`), the SR ``none`` method is the L1 to the
ground truth, and the loop writes a checkpoint after every epoch (under ``<stored teacher>.partial`` in
:func:`prepare_mtkd_teacher`), so a killed driver reruns stage 1 from its last finished epoch; a NaN or infinite
loss stops it with :class:`~raykd.train.loop.NonFiniteLoss`. It then measures each teacher and the aggregated
teacher on the held-out images with :meth:`SRTask.evaluate` (the sweep's val set and PSNR convention) and returns the
composite checkpoint. :func:`prepare_mtkd_teacher` does all of it once per set of inputs and keeps the result in the
trained-teacher store (:class:`TrainedTeachers`), keyed by the teachers' identities (weights' sha256 and configs),
the aggregator's kwargs, the decoded data and the stage-1 config; a second run reuses it.

Optimisation (:func:`stage1_config`): Adam with betas (0.9, 0.999), no weight decay, L1 to the ground truth, as
the paper. The learning rate defaults to the paper's 1e-4 (:data:`PAPER_LR`); the authors' released training
config uses 2e-4 (:data:`OFFICIAL_LR`) with the rate halved at 200k and 400k of its 500k iterations, which raykd
scales to epochs: ``schedule="step"`` halves the rate after 40% and 80% of the epochs (:func:`stage1_milestones`,
the loop's ``multistep`` schedule with gamma 0.5). The paper's number is the default because it is the one the
paper reports its results with; the official one is a flag away (``sweeps/mtkd_div2k.py --stage1-lr 2e-4``).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from raykd.config import (DataConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherServiceConfig, TrainConfig,
                          to_json)
from raykd.data.store import store_root
from raykd.models.aggregator import MTKDTeacher
from raykd.models.checkpoint import META_FILE, read_meta
from raykd.models.features import unwrap_model
from raykd.models.tiling import super_resolve
from raykd.teachers.precision import DEFAULT_PRECISION
from raykd.teachers.sources import StoredTeacher
from raykd.teachers.spec import TeacherSpec, sorted_specs
from raykd.teachers.store import TeacherTable
from raykd.teachers.trained import TrainedTeachers
from raykd.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from raykd.train.loop import Report, build_student, resolve_device, train
from raykd.train.tasks import SRTask, Task, build_task

__all__ = ["COMPOSITE_MODEL", "PAPER_LR", "OFFICIAL_LR", "Stage1Result", "AggregationTask", "stage1_config",
           "stage1_milestones", "train_stage1", "prepare_mtkd_teacher"]

COMPOSITE_MODEL = "mtkd_teacher"
PAPER_LR = 1e-4  # MTKD's paper (Sec. 4.1)
OFFICIAL_LR = 2e-4  # the authors' released stage-1 training config
# the released config halves the rate at 200k and 400k of 500k iterations: at 40% and 80% of the training
MILESTONE_FRACTIONS = (0.4, 0.8)
GAMMA = 0.5
SCHEDULES = ("step", "cosine", "constant")


def stage1_milestones(epochs: int) -> list[int]:
    """The epochs after which ``schedule="step"`` halves the stage-1 learning rate: 40% and 80% of ``epochs``
    (the released config's 200k and 400k of 500k iterations), at least 1, distinct, and before the last epoch ends
    (a halving after it would change nothing)."""
    return sorted(m for m in {max(1, round(f * epochs)) for f in MILESTONE_FRACTIONS} if m < epochs)


def _schedule(schedule: str, epochs: int) -> dict[str, Any]:
    """The :class:`OptimConfig` schedule fields of a stage-1 ``schedule``: ``"step"`` is the loop's ``multistep``
    at :func:`stage1_milestones` with gamma 0.5 (constant for a run too short to reach a milestone)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"stage-1 schedule {schedule!r}: expected 'step' (MTKD's halving), 'cosine' or 'constant'")
    milestones = tuple(stage1_milestones(epochs)) if schedule == "step" else ()
    if milestones:
        return {"schedule": "multistep", "milestones": milestones, "gamma": GAMMA}
    return {"schedule": "constant" if schedule == "step" else schedule}


def stage1_config(data: DataConfig, *, epochs: int, lr: float = PAPER_LR, batch_size: int = 16,
                  patch_size: int = 64, patches_per_image: int | None = None, schedule: str = "step",
                  aggregator_kwargs: Mapping[str, Any] | None = None, steps_per_epoch: int | None = None,
                  seed: int = 0, runtime: RuntimeConfig | None = None) -> TrainConfig:
    """Stage 1 as a :class:`TrainConfig`: the aggregator (``mtkd_aggregator`` with ``aggregator_kwargs`` over its
    paper configuration) on ``data``'s images with LR patches of ``patch_size`` (the paper: 64, i.e. 256-pixel
    HR patches at x4), Adam (0.9, 0.999) without weight decay at ``lr`` (default the paper's 1e-4), batch
    ``batch_size`` (the released config: 16), ``schedule`` "step" (halved at 40% and 80% of the epochs),
    "cosine" or "constant"; the SR ``none`` method: L1 to the ground truth (Sec. 3.1)."""
    data = dataclasses.replace(data, patch_size=patch_size,
                               patches_per_image=patches_per_image or data.patches_per_image)
    return TrainConfig(model=ModelConfig("mtkd_aggregator", dict(aggregator_kwargs or {})), data=data,
                       optim=OptimConfig(name="adam", lr=lr, betas=(0.9, 0.999), weight_decay=0.0, epochs=epochs,
                                         batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                                         **_schedule(schedule, epochs)),
                       runtime=runtime or RuntimeConfig(), seed=seed)


class AggregationTask(Task):
    """MTKD stage 1 as a task of the training loop (Sec. 3.1): the model trained is the aggregator, its input
    (``"teachers"``) the N teachers' outputs for the batch's patches concatenated in teacher-name order,
    ``(B, 3N, sH, sW)``, and its target the HR patch, so the SR ``none`` method fits ``L1(agg(T), HR)``.

    The patches are ``task``'s own (:meth:`SRTask.batch`: shuffled as every run's, fresh views every epoch unless
    ``data.reuse_views``); each teacher's patch is cut from its whole-image row with the patch's box and oriented
    like it (:class:`StoredTeacher`), so LR, HR and teacher patches stay aligned pixel for pixel. Validation runs
    the aggregator on the teachers' SR images of the val split (``val_outputs``: one ``(3N, sH, sW)`` array per
    image), tiled at HR resolution where the teachers were tiled (``data.tile`` > 0).
    """

    metric, output, target_key, teacher_input = SRTask.metric, SRTask.output, SRTask.target_key, "lr"
    model_input = "teachers"

    def __init__(self, task: SRTask, sources: Sequence[StoredTeacher], val_outputs: Sequence[np.ndarray]) -> None:
        super().__init__(task.data, task.train_arrays, task.val_arrays, task.seed)
        self.sr, self.train, self.sources, self.val_outputs = task, task.train, list(sources), list(val_outputs)

    def batch(self, indices: np.ndarray, epoch: int, device: torch.device, inputs: tuple[str, ...]
              ) -> dict[str, Any]:
        batch = self.sr.batch(indices, epoch, device, ("lr",))
        batch["teachers"] = torch.cat([s.request(batch, count=False)()["image"] for s in self.sources], dim=1)
        return batch

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_teachers": len(self.sources), "scale": self.data.scale}

    def evaluate(self, model: nn.Module, device: torch.device, input_key: str = "teachers") -> dict[str, float]:
        net, s = unwrap_model(model), self.data.scale

        def image(i: int) -> torch.Tensor:
            x = torch.from_numpy(self.val_outputs[i])[None].to(device, torch.float32)
            return super_resolve(net, x, 1, self.data.tile * s, self.data.tile_overlap * s)[0]

        return self.sr.score(net, image)


@dataclass
class Stage1Result:
    """What stage 1 produced: the aggregated teacher's spec and how it and each teacher score on held-out images.

    ``heldout`` maps every teacher name and ``spec.name`` (the aggregated teacher) to ``{"val_psnr", "val_ssim"}``
    (:meth:`SRTask.evaluate` on the data's val images); ``teachers`` are the names in aggregator order;
    ``training`` the record of the aggregator's training (its epochs, last loss, held-out scores in the loop,
    config); ``reused``: read back from the store."""

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


def _heldout(task: SRTask, specs: Sequence[TeacherSpec], device: torch.device
             ) -> tuple[list[nn.Module], dict[str, dict[str, float]], list[np.ndarray]]:
    """The teachers' networks, their held-out scores (:meth:`SRTask.evaluate`'s) and their SR images of the val
    split, concatenated per image in teacher-name order as float16 (what the aggregator is validated on: about
    17 MB per teacher for a 2K image, 1.7 GB per teacher for DIV2K's 100 valid images; a benchmark set such as
    Set5 a few MB)."""
    nets, heldout, images = [], {}, [[] for _ in range(len(task.val_arrays))]
    for spec in specs:
        net = spec.build(device)

        def image(i: int, net: nn.Module = net) -> torch.Tensor:
            out = task.val_image(net, i, device)
            images[i].append(out.half().numpy())
            return out

        nets.append(net)
        heldout[spec.name] = task.score(net, image)
    return nets, heldout, [np.concatenate(parts) for parts in images]


def _train_aggregator(cfg: TrainConfig, stage: AggregationTask, directory: Path, report: Report | None
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or go on training) the aggregator with :func:`train`, checkpointing every epoch to ``directory``;
    return it, trained, and the record of its training."""
    resume = find_checkpoint(directory)
    if resume is not None:
        print(f"MTKD stage 1: resuming the aggregator from {resume} (epoch {read_meta(resume)['epoch']} of "
              f"{cfg.optim.epochs} done)", flush=True)
    started = time.perf_counter()
    final = train(cfg, task=stage, checkpoint_dir=directory, resume_from=resume, report=report)
    aggregator = build_student(cfg, stage)
    load_checkpoint(find_checkpoint(directory), model=aggregator, rng=False)
    record = {"epochs": final["epoch"], "loss": final["train_loss"], "train_s": time.perf_counter() - started,
              **{k: final[k] for k in ("val_psnr", "val_ssim", "best_val_psnr")}, "config": to_json(cfg)}
    return aggregator, record


def train_stage1(teachers: Sequence[TeacherSpec], cfg: TrainConfig, task: SRTask,
                 tables: Mapping[str, TeacherTable], *, name: str = "mtkd",
                 checkpoint_dir: str | os.PathLike | None = None, report: Report | None = None
                 ) -> tuple[dict[str, bytes], dict]:
    """Train the aggregator ``cfg`` describes on the teachers' whole-image ``tables`` (``{teacher name: table
    holding "image"}``) through the training loop, measure every teacher and the aggregated teacher on ``task``'s
    held-out images, and return the composite checkpoint's files and its metadata (``heldout``; ``stage1``: the
    last epoch's loss and held-out scores, and the config).

    ``checkpoint_dir`` receives the aggregator's checkpoint after every epoch, and a run that finds one there goes
    on from its epoch (a killed driver resumes stage 1); ``report(metrics, checkpoint)`` is called after every
    epoch, as by :func:`~raykd.train.loop.train`."""
    specs = sorted_specs(list(teachers))
    _check(specs, cfg, name)
    missing = [s.name for s in specs if s.name not in tables]
    if missing:
        raise KeyError(f"MTKD stage 1: no whole-image table for teachers {missing}")
    device = resolve_device(cfg.runtime.device)
    sources = []
    for spec in specs:
        source = StoredTeacher(lambda epoch, table=tables[spec.name]: table, ("image",), scale=cfg.data.scale)
        source.begin_epoch(0)  # one whole-image table serves every epoch
        sources.append(source)
    nets, heldout, val_outputs = _heldout(task, specs, device)
    with tempfile.TemporaryDirectory(prefix="raykd-mtkd-stage1-") as tmp:
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else Path(tmp) / "aggregator"
        aggregator, training = _train_aggregator(cfg, AggregationTask(task, sources, val_outputs), directory, report)
        composite = MTKDTeacher(nets, aggregator.to(device)).eval()
        heldout[name] = task.evaluate(composite, device)
        model_kwargs = {"teachers": [{"name": s.name, "model": s.model, "model_kwargs": s.model_kwargs}
                                     for s in specs],
                        "aggregator_kwargs": dict(cfg.model.kwargs), "scale": cfg.data.scale}
        meta = {"model": COMPOSITE_MODEL, "model_kwargs": model_kwargs, "name": name,
                "teachers": [s.name for s in specs],
                "teacher_weights_sha256": {s.name: s.weights_sha256 for s in specs},
                "data": {"train": task.train_arrays.key, "val": task.val_arrays.key}, "heldout": heldout,
                "stage1": training}
        saved = save_checkpoint(Path(tmp) / "checkpoint", model=composite, meta=meta)
        files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    return files, meta


def _print_epoch(epochs: int, metrics: dict[str, Any], _checkpoint: Path | None) -> None:
    print(f"MTKD stage 1: aggregator epoch {metrics['epoch']}/{epochs}: L1 {metrics['train_loss']:.4f}, held-out "
          f"PSNR {metrics['val_psnr']:.2f} dB", flush=True)


def _stage1_task(specs: list[TeacherSpec], cfg: TrainConfig, splits: dict[str, Any], tables: dict[str, Any],
                 name: str, checkpoint_dir: str) -> tuple[dict[str, bytes], dict]:
    """:func:`train_stage1` with one line printed per epoch, in this process or in a Ray task: the splits and
    tables are object-store references."""
    import ray

    task = build_task(cfg.data, cfg.seed, {split: ray.get(ref) for split, ref in splits.items()})
    return train_stage1(specs, cfg, task, {n: ray.get(ref) for n, ref in tables.items()}, name=name,
                        checkpoint_dir=checkpoint_dir, report=functools.partial(_print_epoch, cfg.optim.epochs))


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
    holds the tables in the object store; its checkpoints go to the stored teacher's ``.partial`` directory, so a
    rerun after a killed driver goes on from the last finished epoch (the teachers' tables are read back from the
    store)."""
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
        # the aggregator's checkpoints go to <target>.partial: a killed driver resumes from them
        args = (specs, cfg, dict(splits), tables, name, str(store.partial(target)))
        if resources is None:
            files, _ = _stage1_task(*args)
        else:
            files, _ = ray.get(ray.remote(**dict(resources))(_stage1_task).remote(*args))
    finally:
        stop_service(actor)  # (and its holder: the teachers' weights are freed)
    store.commit(files, target, name)
    return Stage1Result.from_checkpoint(target, name)
