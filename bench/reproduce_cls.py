"""Classification distillation on real data, as the KD papers report it: one teacher, one student, every method,
several seeds, mean +- std (issue #9; no Ray: the run is in this process, on a GPU when there is one).

On ``--data-root`` (default: the 10 real TinyImageNet classes beside the project, ``../shared/data/cls/
tiny-imagenet-10``, 5,000 train / 500 val JPEGs at 64 px), it trains the teacher once (fresh views every epoch),
then the student with ``none``, ``kd``, ``dkd`` and ``figkd`` at the HR input and, at the LR input (down by 4 and
back up, DFD's), ``dfd`` against the LR-only baseline (``none`` on LR), each with ``--seeds`` seeds, and prints a
table of top-1 mean +- std. ``--frozen-views`` also trains the teacher again on one frozen view per image (v1's
behaviour, ``reuse_views=1``) and prints both teachers' accuracies (issue #12).

    python bench/reproduce_cls.py [--epochs 30] [--teacher-epochs 30] [--seeds 3] [--frozen-views]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from raykd.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherConfig, TrainConfig
from raykd.data.arrays import load_split
from raykd.train.loop import train
from raykd.train.tasks import build_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cls" / "tiny-imagenet-10"
HR_METHODS = ("none", "kd", "dkd", "figkd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--frozen-views", action="store_true", help="also train the teacher on frozen views (v1)")
    p.add_argument("--out", type=Path, default=Path("runs") / "reproduce_cls")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if not (args.data_root / "wnids.txt").is_file():
        raise SystemExit(f"no TinyImageNet-layout data at {args.data_root} (wnids.txt missing): pass --data-root")
    data = DataConfig(dataset="tinyimagenet", root=str(args.data_root), image_size=args.image_size)
    splits = {split: load_split(data, split, None) for split in ("train", "val")}  # decoded once
    runtime = RuntimeConfig(device=args.device)
    # the CIFAR/TinyImageNet KD recipe (CRD, mdistiller): SGD 0.9, weight decay 5e-4, cosine; fewer epochs
    optim = OptimConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size)
    base = TrainConfig(model=ModelConfig(args.student), data=data, optim=optim, runtime=runtime)

    def teacher(views: int | None, out: Path) -> float:
        cfg = replace(base, model=ModelConfig(args.teacher), data=replace(data, reuse_views=views),
                      optim=replace(optim, epochs=args.teacher_epochs))
        return train(cfg, task=build_task(cfg.data, 0, splits), checkpoint_dir=out)["val_top1"]

    started = time.perf_counter()
    teacher_dir = args.out / "teacher"
    fresh = teacher(None, teacher_dir)
    print(f"teacher {args.teacher}, fresh views every epoch: top-1 {fresh:.2f}%  ({time.perf_counter() - started:.0f} s)",
          flush=True)
    if args.frozen_views:
        frozen = teacher(1, args.out / "teacher_frozen")
        print(f"teacher {args.teacher}, one frozen view per image (v1): top-1 {frozen:.2f}%", flush=True)

    runs = [(m, m, None) for m in HR_METHODS] + [("none (LR)", "none", "lr"), ("dfd (LR)", "dfd", None)]
    results: dict[str, list[float]] = {}
    for label, method, student_input in runs:
        for seed in range(args.seeds):
            cfg = replace(base, seed=seed, method=MethodConfig(method, student_input=student_input),
                          teacher=TeacherConfig(str(teacher_dir)) if method != "none" else None)
            results.setdefault(label, []).append(train(cfg, task=build_task(data, seed, splits))["val_top1"])
            print(f"  {label} seed {seed}: {results[label][-1]:.2f}", flush=True)
    print(f"\n{args.student} from {args.teacher} ({fresh:.2f}%) on {args.data_root.name}, {args.image_size} px, "
          f"{args.epochs} epochs, {args.seeds} seeds (top-1 %, mean +- std):")
    print("| method | input | top-1 |\n|---|---|---|")
    for label, values in results.items():
        v = np.asarray(values)
        print(f"| {label.split()[0]} | {'LR (x4 down, up)' if 'LR' in label else 'HR'} | "
              f"{v.mean():.2f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.2f} |")
    print(f"({time.perf_counter() - started:.0f} s on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'})")


if __name__ == "__main__":
    main()
