"""DVMSR distillation (Lei et al., CVPRW 2024) on DIV2K, swept with Ray Tune + Optuna.

    python sweeps/dvmsr_div2k.py --smoke                                  # the whole pipeline on built-in data
    python sweeps/dvmsr_div2k.py --download --val-root benchmark/Set5      # DIV2K into the cache dir, then the sweep
    python sweeps/dvmsr_div2k.py --data-root /data/DIV2K --val-root benchmark/Set5 --set14-root benchmark/Set14
    python sweeps/dvmsr_div2k.py --address auto ...                       # on a running cluster (ray up cluster.yaml)

The teacher (dvmsr_teacher: 8 RSSB, 192 channels) is trained first unless --teacher names a checkpoint, and kept
in the cache directory; its outputs are computed once and shared by every trial. The student is dvmsr (0.424M
parameters at x4); the sweep compares it alone (``none``) with DVMSR distillation (``dvmsr``: w_gt, w_kd and the
distill position, end-level output or mid-level feature). Trials are validated on --val-root (Set5 in the
benchmark layout HR/ + LR_bicubic/X{s}/; DIV2K's 100 valid images without it); with --set14-root every trial's
final student is also measured on Set14, and both sets' PSNR/SSIM (Y channel, scale-pixel border) join the
results table. Results go to <storage>/<name>/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raykd.train.config import TrainConfig
from raykd.tune.driver import (add_div2k_arguments, add_sweep_arguments, connect, find_div2k, prepare_teacher,
                               print_summary, profile, sweep_config)
from raykd.tune.report import add_test_sets
from raykd.tune.sweep import run_sweep

METHODS = ["none", "dvmsr"]
SMOKE_STUDENT = {"embed_dim": 16, "depths": (1, 1)}
SMOKE_TEACHER = {"embed_dim": 24, "depths": (1, 1, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_div2k_arguments(p)
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint directory (skips teacher training)")
    p.add_argument("--patch-size", type=int, default=None, help="LR training patch side (default 64; smoke 16)")
    add_sweep_arguments(p, methods=METHODS, name="dvmsr_div2k",
                        full=dict(num_samples=16, epochs=30, teacher_epochs=60, batch_size=32),
                        smoke=dict(num_samples=4, epochs=2, teacher_epochs=3, batch_size=8))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.cache_dir = args.cache_dir.expanduser().resolve()
    if args.smoke:
        # the scikit-image photo demo (6 train, 2 val images) under the cache dir; tiny DVMSRs on 16-pixel LR
        # patches: the pipeline end to end in minutes on two cores, not a result
        data = dict(data="demo_sr", data_root=str(args.cache_dir / "datasets" / "sr-demo"), patches_per_image=4,
                    lr=2e-3)
        patch, student_kwargs, teacher_kwargs = 16, SMOKE_STUDENT, SMOKE_TEACHER
    else:
        root = find_div2k(args.data_root, args.cache_dir, args.scale, args.download)
        if root is None:
            return 2
        data = dict(data="div2k", data_root=str(root), patches_per_image=16, lr=2e-4)
        patch, student_kwargs, teacher_kwargs = 64, {}, {}
    if args.val_root is not None:
        data.update(val_data="paired", val_root=str(args.val_root.expanduser().resolve()))
    sizes = profile(args)
    common = dict(task="sr", scale=args.scale, optimizer="adam", weight_decay=0.0, seed=args.seed,
                  batch_size=sizes["batch_size"], patch_size=args.patch_size or patch, **data)
    base = TrainConfig(model="dvmsr", model_kwargs=student_kwargs, epochs=sizes["epochs"], **common)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model="dvmsr_teacher", model_kwargs=teacher_kwargs,
                                  epochs=sizes["teacher_epochs"], **common),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    sweep = sweep_config(args)
    summary = run_sweep(base, teacher, sweep)
    tests = {"set14": args.set14_root.expanduser().resolve()} if args.set14_root is not None else {}
    if (sweep.directory / "results.parquet").exists():
        add_test_sets(sweep.directory, base, tests, gpus=min(args.gpus_per_worker, 1))
    print_summary(sweep, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
