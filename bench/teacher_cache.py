"""The streaming teacher service against live teachers, for N trials of one sweep (issue #12's benchmark).

Each trial trains a student with KD for E epochs on fresh views. With the service, the teacher computes each
epoch's table once for all N trials (stored in the persistent store, put in the object store, read by every
trial); live, every trial sends every batch to a teacher actor. Printed, from one run: teacher rows computed and
wall time of both sweeps and their ratios, the ratio expected from the step times measured in the same run,
``(teacher forward + student step) / student step``, and each trial's time to its first step.

With ``--first-step`` (issue 17, item 4), instead: one distilling trial against a fresh service, twice: reading
whole epoch tables (it waits until the service computed every training row) and streamed (the service computes
the rows the trial registered, chunk by chunk; the first step waits for the first chunk). Printed: the time from
the service's start to the trial's first step, and teacher rows computed against rows the trial read
(``--steps-per-epoch`` caps them).

    .venv/bin/python bench/teacher_cache.py [--trials 8] [--epochs 2] [--teacher resnet32x4] [--student resnet8]
    .venv/bin/python bench/teacher_cache.py --first-step --steps-per-epoch 4 [--image-size 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch

from raykd.config import (DataConfig, MethodConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig,
                          TrainConfig)
from raykd.models import create_model
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service, stop_service
from raykd.teachers.sources import run_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.train.loop import train
from raykd.train.tasks import build_task
from raykd.train.worker import epoch_reads
from raykd.tune.sweep import decoded_splits, run_sweep


def step_times(base: TrainConfig, task, teacher: torch.nn.Module, repeats: int = 5) -> tuple[float, float]:
    """Seconds for one teacher forward and one student training step on a batch, measured back to back on one
    thread, the share each teacher actor and trial has (one CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    student = create_model(base.model.name, **task.model_kwargs())
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    batch = task.batch(np.arange(base.optim.batch_size), 0, torch.device("cpu"), ("hr",))

    def student_step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(student(batch["hr"]), batch["label"]).backward()
        optimizer.step()

    def timed(fn) -> float:
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats

    try:
        return timed(lambda: run_teacher(teacher, batch["hr"], ("logits",))), timed(student_step)
    finally:
        torch.set_num_threads(threads)


def first_step(base: TrainConfig, spec: TeacherSpec, splits: dict, task, store: Path, streamed: bool
               ) -> tuple[float, int, int]:
    """(seconds from the service's start to the trial's first step, teacher rows computed, rows read) for one
    distilling trial of one epoch against a fresh service."""
    service = start_service([TeacherRequest(spec, ("logits",))], base.data, splits["train"], base.optim.epochs,
                            TeacherServiceConfig(mode="stored", ahead=0), str(store), store.name)
    started = time.time()
    try:
        reads = epoch_reads(base, task, 1)
        ray.get(service.start.remote([base.seed], {base.seed: {0: reads(0)}} if streamed else None))
        client = ServiceClient(service, spec.name, ("logits",))
        source = client.source("cls", 4, base.seed, reads if streamed else None)
        metrics: dict = {}
        train(replace(base, optim=replace(base.optim, epochs=1)), task=task, teacher=source,
              report=lambda m, _: metrics.update(m), started=started)
        computed = ray.get(service.statistics.remote())[spec.name]["samples_computed"]
    finally:
        stop_service(service)
    read = len(set(reads(0).tolist()) | {0, 1})  # the steps' rows and the 2-sample shape probe
    return metrics["startup_s"], computed, read


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--first-step", action="store_true", help="time to a trial's first step: streamed vs whole tables")
    args = p.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        base = TrainConfig(model=ModelConfig(args.student), data=DataConfig(dataset="demo", image_size=args.image_size,
                                                                             root=str(Path(tmp) / "digits")),
                           optim=OptimConfig(lr=0.1, epochs=args.epochs, batch_size=64,
                                             steps_per_epoch=args.steps_per_epoch),
                           method=MethodConfig("kd"))
        splits = decoded_splits(base, str(Path(tmp) / "cache"))
        task = build_task(base.data, 0, {name: ray.get(ref) for name, ref in splits.items()})
        train(replace(base, model=ModelConfig(args.teacher), method=MethodConfig("none"),
                      optim=replace(base.optim, epochs=1, steps_per_epoch=2)), task=task,
              checkpoint_dir=Path(tmp) / "teacher")
        spec = TeacherSpec.from_checkpoint(Path(tmp) / "teacher")
        if args.first_step:
            figures = {kind: first_step(base, spec, splits, task, Path(tmp) / f"store-{kind}", kind == "streamed")
                       for kind in ("whole", "streamed")}
            ray.shutdown()
            print(f"one KD trial, {args.teacher} -> {args.student}, {args.image_size}-px digits ({len(task)} training "
                  f"images), steps per epoch {args.steps_per_epoch}, batch 64; from the service's start:")
            for kind, (startup, computed, read) in figures.items():
                print(f"  {kind:8s}: first step after {startup:6.2f} s; teacher rows computed {computed:5d}, "
                      f"rows the trial read {read:5d}")
            print(f"  whole / streamed: time to first step x{figures['whole'][0] / figures['streamed'][0]:.2f}")
            return
        rows, walls, startups = {}, {}, {}
        for mode in ("stored", "live"):
            sweep = SweepConfig(name=mode, methods=("kd",), num_samples=args.trials, max_concurrent_trials=1, seeds=0,
                                verbose=0, storage=str(Path(tmp) / "runs"), cache_dir=str(Path(tmp) / f"cache-{mode}"),
                                teacher_service=TeacherServiceConfig(mode=mode))
            started = time.perf_counter()
            summary = run_sweep(base, spec, sweep, splits=splits)
            walls[mode] = time.perf_counter() - started
            rows[mode] = summary["teacher_samples_computed"]
            table = pd.read_parquet(Path(tmp) / "runs" / mode / "results.parquet")
            startups[mode] = table["startup_s"].to_numpy()
        teacher_s, student_s = step_times(base, task, spec.build("cpu"))
    ray.shutdown()
    n = len(task)
    print(f"{args.trials} trials x {args.epochs} epochs of KD, {args.teacher} -> {args.student}, {args.image_size}-px "
          f"digits ({n} training images), trials one at a time:")
    for mode in ("stored", "live"):
        print(f"  {mode:6s}: {walls[mode]:7.1f} s, teacher rows computed {rows[mode]:7d}, first step after "
              f"{np.median(startups[mode]):.2f} s (median; max {startups[mode].max():.2f} s)")
    print(f"  live / stored: wall x{walls['live'] / walls['stored']:.2f}, teacher rows x"
          f"{rows['live'] / max(rows['stored'], 1):.2f} (stored rows = epochs x {n} = {args.epochs * n}, "
          f"whatever the number of trials)")
    print(f"  step times (batch 64): teacher forward {1e3 * teacher_s:.1f} ms, student step {1e3 * student_s:.1f} ms; "
          f"expected wall ratio (teacher + student) / student = x{(teacher_s + student_s) / student_s:.2f}")


if __name__ == "__main__":
    main()
