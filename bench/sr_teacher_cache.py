"""What serving an SR teacher through the teacher service costs, and what its whole-image cache saves a sweep.

    python bench/sr_teacher_cache.py                                          # CPU defaults, a minute or two
    python bench/sr_teacher_cache.py --model rcan --patch 48 --batch-sizes 8 16 32 64   # on a GPU

1. Throughput: teacher images/s of one teacher forward on a batch of LR patches, in the trainer's own process
   (``SRTask.teacher_forward`` on the model) and through the service in live mode (``ActorTeacher`` sending the
   batch to a ``TeacherActor`` and waiting for the answer: serialisation, object store and scheduling included,
   none of it hidden behind a student step as in training). Both sides get the same threads (``--threads``; the
   actor's ``num_cpus``) or the same GPU. Calls of the two paths alternate so that load from other processes hits
   both alike; each figure is the median of ``--repeats`` calls.
2. Sweep-level saving for ``--trials`` trials of ``--epochs`` epochs over the training patches: live, every trial
   pays a teacher forward on every batch; cached, the teacher runs once per training image (whole images, tiled)
   and every trial crops its patches from the cache. Measured here: the one cache build (through the service,
   Parquet write included), one epoch of live requests, one epoch of cached crops; the sweep totals and their
   ratio follow from those three times.

Figures come from this one run, on this machine, with the random-weight teacher named by ``--model`` on the
built-in SR photo demo (six training images). Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import torch
from torch.utils.data import default_collate

from raykd.data.builtin import default_cache_dir, make_demo_sr
from raykd.models import create_model
from raykd.teachers.pool import TeacherService
from raykd.teachers.specs import TeacherSpec
from raykd.train.checkpoint import save_checkpoint
from raykd.train.config import TrainConfig
from raykd.train.loop import resolve_device
from raykd.train.tasks import build_task

OUTPUTS = ("logits",)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="edsr_baseline", help="teacher registry name (default edsr_baseline)")
    p.add_argument("--model-kwargs", default="{}", help="JSON kwargs of the teacher")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--patch", type=int, default=24, help="LR patch side (default 24)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per path and batch size (median reported)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each side (the actor's num_cpus)")
    p.add_argument("--trials", type=int, default=16, help="trials of the modelled sweep")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial of the modelled sweep")
    p.add_argument("--patches-per-image", type=int, default=8, help="training patches per image and epoch")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size of the modelled sweep")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where the SR demo is kept")
    return p.parse_args(argv)


def _median_times(calls: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds per call of each function, the functions interleaved call by call after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for name, call in calls.items():
        call()
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _epoch_batches(task, batch_size: int) -> list[dict]:
    task.train.set_epoch(0)
    items = [task.train[i] for i in range(len(task.train))]
    return [default_collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    gpus = 1 if device.type == "cuda" else 0
    sync = torch.cuda.synchronize if gpus else (lambda: None)
    data_root = make_demo_sr(args.cache_dir.expanduser() / "datasets" / "sr-demo")
    cfg = TrainConfig(task="sr", data="demo_sr", data_root=str(data_root), scale=args.scale, patch_size=args.patch,
                      patches_per_image=args.patches_per_image, check_data=False)
    task = build_task(cfg)
    ray.init(num_cpus=max(2, args.threads + 1), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        kwargs = {"scale": args.scale, **json.loads(args.model_kwargs)}
        model = create_model(args.model, **kwargs)
        spec = TeacherSpec.from_checkpoint(
            save_checkpoint(Path(tmp) / "teacher", model=model, meta={"model": args.model, "model_kwargs": kwargs}))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        service = TeacherService([spec], cfg, Path(tmp) / "cache", num_cpus=args.threads, num_gpus=gpus)
        try:
            actor = service.actors[spec.name][0]
            actor_threads = ray.get(actor.__ray_call__.remote(lambda self: torch.get_num_threads()))
            print(f"teacher {args.model} ({params:.2f}M parameters, random weights), x{args.scale}, LR patch "
                  f"{args.patch}, device {device}" + ("" if gpus else
                                                      f", threads: trainer {torch.get_num_threads()}, actor "
                                                      f"{actor_threads}"))

            # 1. throughput: in-process forward vs the service's live path
            local = spec.build(device)
            live = service.handles(OUTPUTS, mode="live")[spec.name].source(task)
            patches = [task.train[i] for i in range(len(task.train))]
            print("\n| batch | in-process img/s | actor img/s | actor path costs |\n|---|---|---|---|")
            for b in args.batch_sizes:
                batch = default_collate([patches[i % len(patches)] for i in range(b)])
                t = _median_times({"local": lambda: task.teacher_forward(local, batch["lr"], OUTPUTS),
                                   "actor": lambda: live.request(batch)()}, args.repeats, sync)
                print(f"| {b} | {b / t['local']:.1f} | {b / t['actor']:.1f} | {t['actor'] / t['local'] - 1:+.1%} |",
                      flush=True)

            # 2. sweep-level saving: the cache build once vs a live forward per batch per epoch per trial
            start = time.perf_counter()
            handle = service.handles(OUTPUTS, mode="cached")[spec.name]
            build_s = time.perf_counter() - start
            cached = handle.source(task)
            batches = _epoch_batches(task, args.batch_size)
            start = time.perf_counter()
            for batch in batches:
                cached.request(batch)()
            serve_s = time.perf_counter() - start
            start = time.perf_counter()
            for batch in batches:
                live.request(batch)()
            live_s = time.perf_counter() - start
        finally:
            service.shutdown()
    ray.shutdown()

    runs = args.trials * args.epochs
    images = len(task.train.base)
    lr_pixels = sum(h * w for h, w in (task.train.base.lr_size(i) for i in range(images)))
    patch_pixels = len(task.train) * args.patch**2
    live_total, cached_total = runs * live_s, build_s + runs * serve_s
    print(f"\nsweep of {args.trials} trials x {args.epochs} epochs, {len(task.train)} patches per epoch "
          f"({images} images x {args.patches_per_image}), batch {args.batch_size}:")
    print("| | teacher forwards | teacher LR pixels | teacher-side seconds |\n|---|---|---|---|")
    print(f"| live (every batch, every trial) | {runs * len(task.train)} patches | {runs * patch_pixels:,} | "
          f"{live_total:.1f} ({live_s:.2f} per epoch) |")
    print(f"| cached (whole images once, then crops) | {images} images | {lr_pixels:,} | {cached_total:.1f} "
          f"(build {build_s:.2f} + {serve_s:.3f} per epoch) |")
    print(f"\ncache saves {live_total / cached_total:.1f}x the teacher-side time and "
          f"{runs * patch_pixels / lr_pixels:.1f}x the teacher pixels; it pays for itself after "
          f"{build_s / max(live_s - serve_s, 1e-9):.1f} epochs of one trial")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
