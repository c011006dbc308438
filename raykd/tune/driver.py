"""What a sweep script does before the sweep: connect to Ray, and train (or reuse) the teacher."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import ray

from raykd.teachers.specs import TeacherSpec
from raykd.train.checkpoint import META_FILE
from raykd.train.config import TrainConfig
from raykd.train.tasks import TASKS, build_task


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` ("auto" for the one this machine belongs to) or start a local Ray."""
    if ray.is_initialized():
        return
    context = ray.init(address=address) if address else ray.init()
    if getattr(context, "dashboard_url", None):
        print(f"Ray dashboard: http://{context.dashboard_url}")


def _train_to_files(config: dict) -> dict[str, bytes]:
    """Train a model (in whatever Ray worker runs this) and return its checkpoint's files."""
    from raykd.train.loop import train

    def report(metrics, _checkpoint):
        metric = TASKS[config.get("task", "cls")].metric
        print(f"teacher {config['model']}: epoch {metrics['epoch']}/{config['epochs']} "
              f"{metric} {metrics[metric]:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="raykd-teacher-") as tmp:
        train(config, report=report, checkpoint_dir=Path(tmp) / "ckpt")
        return {p.name: p.read_bytes() for p in (Path(tmp) / "ckpt").iterdir()}


def teacher_dir(cfg: TrainConfig, cache_dir: Path) -> Path:
    """Where the teacher this config trains is kept: keyed by the config and the training data."""
    fingerprint = build_task(TrainConfig.from_dict({**cfg.to_dict(), "check_data": False})).fingerprint
    blob = json.dumps({"config": {k: v for k, v in cfg.to_dict().items() if k not in ("device", "num_workers")},
                       "data": fingerprint}, sort_keys=True)
    return Path(cache_dir).expanduser() / "teachers" / f"{cfg.model}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def prepare_teacher(checkpoint: str | os.PathLike | None, cfg: TrainConfig, *, cache_dir: Path,
                    gpus: float = 0) -> TeacherSpec:
    """The sweep's teacher: the given checkpoint, else one trained with ``cfg`` (once; later runs reuse it)."""
    if checkpoint is not None:
        return TeacherSpec.from_checkpoint(checkpoint)
    target = teacher_dir(cfg, cache_dir)
    if (target / META_FILE).is_file():
        print(f"reusing teacher {target}")
        return TeacherSpec.from_checkpoint(target)
    print(f"training teacher {cfg.model} for {cfg.epochs} epochs -> {target}")
    # on a GPU it needs one CPU to feed it; on CPUs it may use every core the cluster has free
    cpus = 1 if gpus else max(1, int(ray.available_resources().get("CPU", 1)))
    files = ray.get(ray.remote(num_gpus=gpus, num_cpus=cpus)(_train_to_files).remote(cfg.to_dict()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    for name, content in files.items():
        (tmp / name).write_bytes(content)
    try:
        os.replace(tmp, target)
    except OSError:  # another run finished the same teacher first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return TeacherSpec.from_checkpoint(target)
