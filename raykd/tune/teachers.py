"""A sweep's teacher, trained once: :func:`prepare_teacher` reuses a verified teacher from the trained-teacher
store (:mod:`raykd.teachers.trained`) or trains it in one Ray task, resumably, and stores it."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from raykd.config import RuntimeConfig, TrainConfig, to_json
from raykd.models.checkpoint import read_meta
from raykd.registry import TASKS, trust_plugins
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.trained import TrainedTeachers
from raykd.train.checkpoint import find_checkpoint
from raykd.train.loop import train
from raykd.train.tasks import build_task
from raykd.tune.resources import training_resources

__all__ = ["prepare_teacher", "node_resources", "fit_to_a_node", "is_running"]


def node_resources() -> list[dict[str, float]]:
    """The total resources of every alive node."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def fit_to_a_node(gpus: float) -> dict[str, float]:
    """What a teacher-training task asks for (:func:`raykd.tune.resources.training_resources`)."""
    return training_resources(gpus)


def _train_teacher(cfg: TrainConfig, splits: Mapping[str, Any], partial: str) -> dict[str, bytes]:
    """Train ``cfg`` (in whatever Ray worker runs this), checkpointing every epoch to ``partial`` and resuming from
    it; returns the final checkpoint's files."""
    task = build_task(cfg.data, cfg.seed, {name: ray.get(ref) for name, ref in splits.items()})
    resume = find_checkpoint(partial)
    if resume is not None:
        print(f"resuming teacher training from {resume} (epoch {read_meta(resume)['epoch']} done)", flush=True)
    metric = TASKS.get(cfg.data.task).metric

    def report(metrics: dict[str, Any], _checkpoint: Path | None) -> None:
        print(f"teacher {cfg.model.name}: epoch {metrics['epoch']}/{cfg.optim.epochs} {metric} {metrics[metric]:.2f}",
              flush=True)

    train(cfg, task=task, checkpoint_dir=partial, resume_from=resume, report=report)
    final = find_checkpoint(partial)
    return {p.name: p.read_bytes() for p in final.iterdir() if p.is_file()}


def prepare_teacher(checkpoint: str | Path | None, cfg: TrainConfig, splits: Mapping[str, Any], *,
                    cache_dir: str | Path, gpus: float = 0, name: str | None = None) -> TeacherSpec:
    """The sweep's teacher: ``checkpoint`` when given (verified), else the teacher ``cfg`` trains, from the store
    when an earlier run made it (keyed by the training config and the decoded data), else trained now and stored.
    A killed run resumes the training from its last epoch."""
    if checkpoint is not None:
        return TeacherSpec.from_checkpoint(checkpoint, name)
    trust_plugins([cfg.model.name])  # the model this sweep's own config names: its checkpoint names it too
    store = TrainedTeachers(cache_dir)
    # the runtime (device, progress bars) does not change what is trained
    document = {"config": to_json(dataclasses.replace(cfg, runtime=RuntimeConfig())),
                "data": ray.get(splits["train"]).key}
    target = store.path(cfg.model.name, document)
    found = store.find(target, name)
    if found is not None:
        print(f"reusing teacher {target}")
        return found
    partial = store.partial(target)
    print(f"training teacher {cfg.model.name} for {cfg.optim.epochs} epochs -> {target}", flush=True)
    resources = fit_to_a_node(gpus)
    ref = ray.remote(**resources)(_train_teacher).remote(cfg, dict(splits), str(partial))
    waited = time.perf_counter()
    while not ray.wait([ref], timeout=60)[0]:
        if not is_running(ref):  # a running task prints its own epochs
            print(f"teacher training waits for {resources} ({time.perf_counter() - waited:.0f} s); cluster free "
                  f"now: {ray.available_resources()}", flush=True)
    return store.commit(ray.get(ref), target, name)


def is_running(ref: Any) -> bool:
    """Whether the task of ``ref`` has started, by Ray's state API; True where that API cannot answer (no
    dashboard), so that no one is told a running task waits."""
    from ray.util.state import get_task

    try:
        attempts = get_task(ref, timeout=10)
    except Exception:  # the state API's own errors vary (no dashboard, timeout); silence is the safe answer
        return True
    attempts = attempts if isinstance(attempts, list) else [attempts] if attempts is not None else []
    return not attempts or any(a.state not in ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT",
                                               "PENDING_OBJ_STORE_MEM_AVAIL", "PENDING_ARGS_FETCH",
                                               "SUBMITTED_TO_WORKER", "NIL") for a in attempts)
