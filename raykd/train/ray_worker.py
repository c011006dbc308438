"""The training function inside Ray Train workers (DDP over ``num_workers``, GPUs where present, CPU otherwise)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
import ray.train.torch

from raykd.teachers.pool import TrialSources
from raykd.train.loop import Runtime, train


def ray_runtime() -> Runtime:
    """This worker's device and rank from Ray Train; the model is wrapped in DDP by ``prepare_model``."""
    ctx = ray.train.get_context()
    return Runtime(device=ray.train.torch.get_device(), rank=ctx.get_world_rank(),
                   world_size=ctx.get_world_size(), wrap_model=ray.train.torch.prepare_model)


def train_worker(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for ``TorchTrainer``: ``config`` holds ``train`` (a TrainConfig dict) and
    ``teacher`` (a TeacherHandle or None). Checkpoints go to the run's storage through ``ray.train.report``; a
    restarted run resumes from the last one."""
    handle = config.get("teacher")
    sources = TrialSources(handle) if handle is not None else None

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if sources is not None:  # Tune sees rank 0's report only, so the counters are summed over the workers
            counters = sources.counters()
            totals = torch.tensor(list(counters.values()), dtype=torch.float64)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(totals)
            metrics = {**metrics, **{k: int(v) for k, v in zip(counters, totals)}}
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)

    previous = ray.train.get_checkpoint()
    resume = previous.as_directory() if previous is not None else contextlib.nullcontext(None)
    with tempfile.TemporaryDirectory(prefix="raykd-") as tmp, resume as resume_dir:
        train(config["train"], report=report, teacher=sources, runtime=ray_runtime(),
              checkpoint_dir=Path(tmp) / "checkpoint", resume_from=resume_dir)
