"""The one trial path, for 1..N workers: :func:`train_worker` runs inside a Ray Tune trial (one worker) or as
every Ray Train worker of a ``TorchTrainer`` (several, DDP), and only the session it reports through differs.

A trial receives a :class:`TrialSpec`: its full :class:`~raykd.config.TrainConfig`, the object-store references of
the sweep's decoded splits (mapped zero-copy; the task is built once per process), and the client of the teacher
service it reads from. Metrics gain ``wall_s`` (since the trial function was called), ``startup_s`` (to the first
training step), ``node`` (where it ran) and the teacher counters, summed over workers and carried across
restarts by the checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray import tune

from raykd import telemetry
from raykd.config import TrainConfig
from raykd.methods import method_class
from raykd.models.checkpoint import META_FILE
from raykd.teachers.service import ServiceClient
from raykd.train.loop import Runtime, resolve_device, shard_order, train
from raykd.train.tasks import Task, build_task

__all__ = ["TrialSpec", "train_worker", "epoch_reads"]


@dataclass(frozen=True)
class TrialSpec:
    """What one trial trains: its config, the sweep's decoded splits (``{"train": ref, "val": ref}``) and the
    teacher service client of its method (``None`` for methods without a teacher)."""

    cfg: TrainConfig
    splits: dict[str, Any]
    teacher: ServiceClient | None = None
    name: str = "trial"
    started: float | None = None  # time.time() when the trial function was called
    extra: dict[str, Any] = field(default_factory=dict)


class _TuneSession:
    """A single-worker trial: reports and checkpoints go straight to Tune."""

    def runtime(self, cfg: TrainConfig) -> Runtime:
        return Runtime(device=resolve_device(cfg.runtime.device))

    def previous(self) -> Any:
        """Tune's checkpoint of this trial, or a newer one the trial persisted that Tune never registered: Tune
        registers a reported checkpoint only after a second round trip to the trial, so a process or node lost
        in between would otherwise restart from an older checkpoint (or from scratch)."""
        given = tune.get_checkpoint()
        try:
            storage = tune.get_context().get_storage()
            fs, trial_dir = storage.storage_filesystem, storage.trial_fs_path
        except Exception:  # not a Tune trial with storage (a test calling the trial function directly)
            return given
        known = _persisted_epoch(fs, given.path) if given is not None else 0
        for info in sorted(fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True)),
                           key=lambda i: i.base_name, reverse=True):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
                epoch = _persisted_epoch(fs, info.path)
                if epoch is not None and epoch > (known or 0):
                    return tune.Checkpoint(info.path, filesystem=fs)
        return given

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=checkpoint)


def _persisted_epoch(fs: Any, directory: str) -> int | None:
    """The epoch of the raykd checkpoint at ``directory`` on ``fs`` if every file of its manifest is there in
    full (sizes; contents are verified when it is loaded), else ``None``."""
    try:
        with fs.open_input_stream(f"{directory}/{META_FILE}") as stream:
            meta = json.loads(stream.read())
        files = meta.get("files") or {}
        infos = fs.get_file_info([f"{directory}/{name}" for name in files])
        if any(info.size != files[info.base_name]["bytes"] for info in infos):
            return None
        return int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _TrainSession:
    """One of several Ray Train workers: DDP model, counters summed over workers, reports through Ray Train."""

    def runtime(self, cfg: TrainConfig) -> Runtime:
        ctx = ray.train.get_context()
        return Runtime(device=ray.train.torch.get_device(), rank=ctx.get_world_rank(),
                       world_size=ctx.get_world_size(), wrap_model=ray.train.torch.prepare_model,
                       all_sum=_all_sum)

    def previous(self) -> Any:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)


def _all_sum(values: dict[str, int]) -> dict[str, int]:
    totals = torch.tensor(list(values.values()), dtype=torch.float64)
    torch.distributed.all_reduce(totals)
    return {k: int(v) for k, v in zip(values, totals.tolist())}


@contextlib.contextmanager
def _resume_dir(previous: Any) -> Iterator[Path | None]:
    if previous is None:
        yield None
    else:
        with previous.as_directory() as path:
            yield Path(path)


def epoch_reads(cfg: TrainConfig, task: Task, world_size: int) -> Callable[[int], np.ndarray]:
    """``reads(epoch)``: the samples all ``world_size`` workers of a run read in ``epoch``, in the order they read
    them (what the teacher service streams for it): first samples 0 and 1, on which the trainer's setup probes the
    teacher's output shapes (:func:`raykd.train.loop.setup`), then the steps': workers deal :func:`shard_order`'s
    shuffle round robin, so the union of their first ``k`` batches is the shuffle's first ``k x batch x workers``
    items."""
    n = len(task)
    per_worker = n // world_size
    if cfg.optim.steps_per_epoch is not None:
        per_worker = min(per_worker, cfg.optim.steps_per_epoch * cfg.optim.batch_size)
    groups = getattr(task.train_arrays, "groups", None)
    probe = np.arange(min(2, n))

    def reads(epoch: int) -> np.ndarray:
        steps = shard_order(n, seed=cfg.seed, epoch=epoch, rank=0, world_size=1, groups=groups)
        steps = steps[: per_worker * world_size]
        return np.concatenate([probe[~np.isin(probe, steps)], steps])

    return reads


def train_worker(config: dict[str, Any]) -> None:
    """Train ``config["trial"]`` (a :class:`TrialSpec`); ``config["distributed"]``: this is a Ray Train worker."""
    spec: TrialSpec = config["trial"]
    started = spec.started or time.time()
    session = _TrainSession() if config.get("distributed") else _TuneSession()
    cfg = spec.cfg
    task = build_task(cfg.data, cfg.seed, {name: ray.get(ref) for name, ref in spec.splits.items()})
    method = method_class(cfg.method.name, cfg.data.task)
    runtime = session.runtime(cfg)
    source = None
    if spec.teacher is not None and method(**cfg.method.params).teacher_outputs():
        source = spec.teacher.source(cfg.data.task, cfg.data.scale, cfg.seed,
                                     epoch_reads(cfg, task, runtime.world_size))
    node = ray.get_runtime_context().get_node_id()
    exported = {"cache_hits": 0, "reports": 0}

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        exported["reports"] += 1
        metrics = {**metrics, "wall_s": time.time() - started, "node": node, **spec.extra,
                   **({"teacher": spec.teacher.teacher} if spec.teacher is not None else {})}
        telemetry.student_throughput(spec.name, metrics["samples_per_s"])
        if spec.teacher is not None:
            telemetry.cache_hits(spec.teacher.teacher, metrics["cache_hits"] - exported["cache_hits"])
            exported["cache_hits"] = metrics["cache_hits"]
        session.report(metrics, checkpoint_dir)

    with tempfile.TemporaryDirectory(prefix="raykd-trial-") as tmp, _resume_dir(session.previous()) as resume:
        final = train(cfg, task=task, teacher=source, runtime=runtime,
                      checkpoint_dir=Path(tmp) / "checkpoint", resume_from=resume, report=report, started=started)
    if not exported["reports"] and final:  # resumed from its last epoch: nothing to train, but Tune needs the result
        report(final, None)
