"""Shared teacher-output cache against live teachers, for N trials of one sweep (issue #3's benchmark).

Each "trial" is what a sweep trial runs: ``raykd.train.loop.train`` for full epochs of a student. With the
cache, the teacher service computes every (sample, view) once (Ray actor, Parquet entry, object store) and the
N trials look outputs up; live, every trial runs the teacher forward on every step. Printed: wall time and
teacher samples computed for both, their ratios, and the ratio one would expect from the measured step times,
(teacher forward + student step) / student step. Run from the repository root:

    .venv/bin/python bench/teacher_cache.py [--trials 8] [--image-size 16] [--epochs 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
import torch

from raykd.models import create_model
from raykd.teachers.pool import TeacherService
from raykd.teachers.sources import InProcessTeacher
from raykd.teachers.specs import TeacherSpec
from raykd.train.config import TrainConfig
from raykd.train.loop import train


def step_times(cfg: TrainConfig, teacher: torch.nn.Module, repeats: int = 5) -> tuple[float, float]:
    """Seconds for one teacher forward and one student training step on a batch, measured back to back."""
    student = create_model(cfg.model, num_classes=10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    y = torch.randint(0, 10, (cfg.batch_size,))

    def student_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(student(x), y).backward()
        optimizer.step()

    def teacher_forward():
        with torch.no_grad():
            teacher(x)

    out = []
    for fn in (teacher_forward, student_step):
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append((time.perf_counter() - started) / repeats)
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--teacher-model", default="resnet32x4")
    p.add_argument("--student-model", default="resnet8x4")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="raykd-bench-"))
    data = dict(data="demo", image_size=args.image_size, batch_size=64, lr=0.05)
    teacher_dir = work / "teacher"
    train({**data, "model": args.teacher_model, "epochs": 1, "steps_per_epoch": 2}, checkpoint_dir=teacher_dir)
    spec = TeacherSpec.from_checkpoint(teacher_dir)
    cfg = TrainConfig(model=args.student_model, method="kd", teacher=str(teacher_dir), epochs=args.epochs,
                      check_data=False, **data)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    started = time.perf_counter()
    service = TeacherService([spec], cfg, work / "cache")
    handle = service.handles(["logits"])[spec.name]
    service.shutdown()
    for _ in range(args.trials):
        train(cfg, teacher=handle.source)
    cached_wall = time.perf_counter() - started
    cached_computed = service.stats[spec.name].samples_computed

    started = time.perf_counter()
    live_computed = 0
    for _ in range(args.trials):
        live = InProcessTeacher(spec.build(), ("logits",))
        train(cfg, teacher=lambda task: live)
        live_computed += live.samples_computed
    live_wall = time.perf_counter() - started
    ray.shutdown()

    teacher_s, student_s = step_times(cfg, spec.build())
    print(f"{args.trials} trials x {args.epochs} epoch(s), teacher {args.teacher_model} -> student "
          f"{args.student_model}, {args.image_size}px digits demo, {torch.get_num_threads()} torch threads")
    print(f"{'':24}{'wall s':>10}{'teacher samples computed':>28}")
    print(f"{'shared cache':24}{cached_wall:>10.1f}{cached_computed:>28}")
    print(f"{'live teacher':24}{live_wall:>10.1f}{live_computed:>28}")
    print(f"live / cache: wall x{live_wall / cached_wall:.2f}, teacher samples x{live_computed / cached_computed:.2f}")
    print(f"expected wall ratio as N grows, (teacher forward + student step) / student step: "
          f"({teacher_s * 1e3:.1f} + {student_s * 1e3:.1f} ms) / {student_s * 1e3:.1f} ms = "
          f"x{(teacher_s + student_s) / student_s:.2f}")


if __name__ == "__main__":
    main()
