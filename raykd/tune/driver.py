"""What the sweep scripts share: their common flags, finding data, connecting to Ray, and training (or reusing)
the teacher before the sweep."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import ray

from raykd.data.builtin import default_cache_dir
from raykd.teachers.specs import TeacherSpec
from raykd.train.checkpoint import META_FILE
from raykd.train.config import TrainConfig
from raykd.train.tasks import TASKS, build_task
from raykd.tune.sweep import SweepConfig


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


def add_sweep_arguments(parser: argparse.ArgumentParser, *, methods: Sequence[str], name: str,
                        full: dict[str, int], smoke: dict[str, int]) -> None:
    """The flags every sweep script shares. ``full`` and ``smoke`` give the script's defaults for
    ``num_samples``, ``epochs``, ``teacher_epochs`` and ``batch_size`` in a real run and with ``--smoke``."""
    def default(key: str) -> str:
        return f"default {full[key]}; smoke {smoke[key]}" if key in full else f"smoke {smoke[key]}"

    p = parser
    p.add_argument("--smoke", action="store_true",
                   help="the whole pipeline on built-in data with small models (minutes on a laptop CPU)")
    p.add_argument("--num-samples", type=int, default=None, help=f"trials ({default('num_samples')})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per trial ({default('epochs')})")
    p.add_argument("--teacher-epochs", type=int, default=None, help=f"teacher epochs ({default('teacher_epochs')})")
    p.add_argument("--batch-size", type=int, default=None, help=default("batch_size"))
    p.add_argument("--methods", nargs="+", default=list(methods),
                   help=f"methods to sweep (default {' '.join(methods)})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--storage", type=Path, default=Path("runs"), help="where sweep results go: <storage>/<name>/")
    p.add_argument("--name", default=None, help=f"sweep name (default {name}; smoke {name}_smoke)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="teacher outputs, trained teachers and datasets (default $RAYKD_CACHE or ~/.cache/raykd)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--seed", type=int, default=0)
    parser.set_defaults(sweep_name=name, full_profile=dict(full), smoke_profile=dict(smoke))


def profile(args: argparse.Namespace) -> dict[str, int]:
    """``num_samples``, ``epochs``, ``teacher_epochs``, ``batch_size``: the flags where given, else the script's
    defaults for this kind of run (full or smoke)."""
    values = dict(args.smoke_profile if args.smoke else args.full_profile)
    for key in ("num_samples", "epochs", "teacher_epochs", "batch_size"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return values


def sweep_config(args: argparse.Namespace, **overrides) -> SweepConfig:
    """The SweepConfig the shared flags describe."""
    values = dict(name=args.name or (f"{args.sweep_name}_smoke" if args.smoke else args.sweep_name),
                  methods=args.methods, num_samples=profile(args)["num_samples"],
                  workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                  gpus_per_worker=args.gpus_per_worker, teacher_gpus=min(args.gpus_per_worker, 1),
                  storage=str(args.storage), cache_dir=str(args.cache_dir), resume=args.resume, seed=args.seed)
    return SweepConfig(**{**values, **overrides})


def find_div2k(data_root: Path | None, cache_dir: Path, scale: int, download: bool) -> Path | None:
    """The DIV2K root with the x``scale`` training pairs (downloaded first when ``download``), else None after
    telling the user where it looked and how to get it."""
    # absolute: Tune runs each trial in its own working directory
    root = (data_root or cache_dir / "datasets" / "DIV2K").expanduser().resolve()
    lr = f"DIV2K_train_LR_bicubic/X{scale}"
    for candidate in (root, root / "DIV2K"):
        if (candidate / "DIV2K_train_HR").is_dir() and (candidate / lr).is_dir():
            return candidate
    if download:
        from raykd.data.sr import download_div2k

        return download_div2k(root, scale)
    print(f"DIV2K not found at {root} (no DIV2K_train_HR/ and {lr}/ there, nor under {root / 'DIV2K'}).\n"
          f"Get it with --download (train + valid, HR and bicubic X{scale}, about 4.3 GB at x4, into {root}), "
          "point --data-root at a directory holding the official DIV2K folders "
          "(https://data.vision.ee.ethz.ch/cvl/DIV2K/), or try the pipeline on built-in data with --smoke.",
          file=sys.stderr)
    return None


def print_summary(sweep: SweepConfig, summary: dict) -> None:
    """What a sweep script prints at the end: the best-per-method table and where the results are."""
    table = sweep.directory / "summary.md"
    print(table.read_text() if table.exists() else summary)
    print(f"results: {sweep.directory}")


def add_div2k_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags of the DIV2K sweeps (MTKD, DVMSR)."""
    p = parser
    p.add_argument("--data-root", type=Path, default=None,
                   help="the DIV2K directory holding DIV2K_train_HR/ and DIV2K_train_LR_bicubic/X{s}/ "
                        "(default: <cache-dir>/datasets/DIV2K)")
    p.add_argument("--download", action="store_true",
                   help="download DIV2K's train and valid HR + bicubic LR archives (about 4.3 GB at x4) if absent")
    p.add_argument("--val-root", type=Path, default=None,
                   help="validation set in the benchmark layout, e.g. Set5 (default: DIV2K valid; smoke: demo val)")
    p.add_argument("--set14-root", type=Path, default=None,
                   help="Set14 in the benchmark layout: every trial's final student is measured on it too")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (2, 3 or 4; default 4)")
