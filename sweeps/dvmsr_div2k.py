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
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from raykd.data.builtin import default_cache_dir
from raykd.train.config import TrainConfig
from raykd.tune.driver import connect, prepare_teacher
from raykd.tune.sweep import SweepConfig, run_sweep

METHODS = ["none", "dvmsr"]
SMOKE_STUDENT = {"embed_dim": 16, "depths": (1, 1)}
SMOKE_TEACHER = {"embed_dim": 24, "depths": (1, 1, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the DIV2K directory holding DIV2K_train_HR/ and DIV2K_train_LR_bicubic/X{s}/ "
                        "(default: <cache-dir>/datasets/DIV2K)")
    p.add_argument("--download", action="store_true",
                   help="download DIV2K's train and valid HR + bicubic LR archives (about 4.3 GB at x4) if absent")
    p.add_argument("--val-root", type=Path, default=None,
                   help="validation set in the benchmark layout, e.g. Set5 (default: DIV2K valid; smoke: demo val)")
    p.add_argument("--set14-root", type=Path, default=None,
                   help="Set14 in the benchmark layout: every trial's final student is measured on it too")
    p.add_argument("--smoke", action="store_true",
                   help="small end-to-end run on the built-in SR demo with tiny models (minutes on a laptop CPU)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (2, 3 or 4; default 4)")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default 16; smoke 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 30; smoke 2)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="epochs to train the teacher (default 60; smoke 3)")
    p.add_argument("--methods", nargs="+", default=METHODS, help=f"methods to sweep (default {' '.join(METHODS)})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint directory (skips teacher training)")
    p.add_argument("--patch-size", type=int, default=None, help="LR training patch side (default 64; smoke 16)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; smoke 8")
    p.add_argument("--storage", type=Path, default=Path("runs"), help="where sweep results go")
    p.add_argument("--name", default=None, help="sweep name (default dvmsr_div2k, smoke: dvmsr_smoke)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="teacher outputs, trained teachers and datasets (default $RAYKD_CACHE or ~/.cache/raykd)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def find_div2k(args: argparse.Namespace) -> Path | None:
    """The DIV2K root with the x``scale`` training pairs (downloaded first with --download), else None after
    telling the user where it looked and how to get it."""
    # absolute: Tune runs each trial in its own working directory
    root = (args.data_root or args.cache_dir / "datasets" / "DIV2K").expanduser().resolve()
    lr = f"DIV2K_train_LR_bicubic/X{args.scale}"
    for candidate in (root, root / "DIV2K"):
        if (candidate / "DIV2K_train_HR").is_dir() and (candidate / lr).is_dir():
            return candidate
    if args.download:
        from raykd.data.sr import download_div2k

        return download_div2k(root, args.scale)
    print(f"DIV2K not found at {root} (no DIV2K_train_HR/ and {lr}/ there, nor under {root / 'DIV2K'}).\n"
          f"Get it with --download (train + valid, HR and bicubic X{args.scale}, about 4.3 GB at x4, into {root}), "
          "point --data-root at a directory holding the official DIV2K folders "
          "(https://data.vision.ee.ethz.ch/cvl/DIV2K/), or try the pipeline on built-in data with --smoke.",
          file=sys.stderr)
    return None


def evaluate_weights(weights: bytes, meta: dict[str, Any], tests: dict[str, dict[str, Any]]) -> dict[str, float]:
    """PSNR/SSIM of a checkpoint's model (its safetensors bytes and meta.json) on each test set, given as the
    training config of an SR task whose val split is that set (run as a Ray task, on a GPU when given one)."""
    import safetensors.torch

    from raykd.models import create_model
    from raykd.train.loop import resolve_device
    from raykd.train.sr_task import SRTask

    device = resolve_device("auto")
    model = create_model(meta["model"], **meta["model_kwargs"])
    model.load_state_dict(safetensors.torch.load(weights), strict=True)
    model.to(device).eval()
    out = {}
    for name, cfg in tests.items():
        metrics = SRTask(TrainConfig.from_dict(cfg)).evaluate(model, device)
        out[f"{name}_psnr"], out[f"{name}_ssim"] = metrics["val_psnr"], metrics["val_ssim"]
    return out


def add_test_sets(directory: Path, base: TrainConfig, tests: dict[str, Path], gpus: float = 0) -> pd.DataFrame:
    """Every trial's last validation SSIM and, per test set, the PSNR/SSIM of its final student (BT.601 Y,
    ``scale``-pixel border; one Ray task per trial), merged into ``results.parquet`` by trial and appended to
    ``summary.md`` as a table."""
    import ray
    from ray.tune import ExperimentAnalysis

    from raykd.train.checkpoint import MODEL_FILE, read_meta

    # the test set is also the (unused) training split: the task then needs nothing but the test folder
    configs = {name: {"task": "sr", "data": "paired", "data_root": str(root), "val_root": str(root),
                      "scale": base.scale, "patch_size": 1, "tile": base.tile, "tile_overlap": base.tile_overlap,
                      "check_data": False} for name, root in tests.items()}
    evaluate = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_weights)
    analysis = ExperimentAnalysis(str(directory))
    rows, pending = [], []
    for trial in analysis.trials:
        last = trial.last_result or {}
        rows.append({"trial": last.get("trial_id", trial.trial_id),
                     "last_val_ssim": float(last.get("val_ssim", math.nan))})
        checkpoint = analysis.get_last_checkpoint(trial) if configs else None
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                files = read_meta(path), (Path(path) / MODEL_FILE).read_bytes()
            pending.append((rows[-1], evaluate.remote(files[1], files[0], configs)))
    for row, ref in pending:
        row.update(ray.get(ref))
    table = pd.read_parquet(directory / "results.parquet")
    added = pd.DataFrame(rows)
    table = table.drop(columns=[c for c in added.columns if c != "trial" and c in table.columns])
    table = table.merge(added, on="trial", how="left")
    table.to_parquet(directory / "results.parquet", index=False)

    columns = ["last_val_psnr", "last_val_ssim"] + [f"{n}_{m}" for n in tests for m in ("psnr", "ssim")]
    columns = [c for c in columns if c in table.columns]
    lines = ["", f"## Every trial: final student (val: {base.val_root or base.data}; "
             f"{', '.join(f'{n}: {r}' for n, r in tests.items()) or 'no test sets'})", "",
             "| trial | method | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        lines.append(f"| {r['trial']} | {r['method']} | " + " | ".join(f"{r[c]:.4f}" for c in columns) + " |")
    summary = directory / "summary.md"
    summary.write_text((summary.read_text() if summary.exists() else "") + "\n".join(lines) + "\n")
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    args.cache_dir = args.cache_dir.expanduser().resolve()
    if args.smoke:
        # the scikit-image photo demo (6 train, 2 val images) under the cache dir; tiny DVMSRs on 16-pixel LR
        # patches: the pipeline end to end in minutes on two cores, not a result
        data = dict(data="demo_sr", data_root=str(args.cache_dir / "datasets" / "sr-demo"), patches_per_image=4,
                    lr=2e-3)
        epochs, teacher_epochs, samples, batch, patch = 2, 3, 4, 8, 16
        student_kwargs, teacher_kwargs = SMOKE_STUDENT, SMOKE_TEACHER
    else:
        root = find_div2k(args)
        if root is None:
            return 2
        data = dict(data="div2k", data_root=str(root), patches_per_image=16, lr=2e-4)
        epochs, teacher_epochs, samples, batch, patch = 30, 60, 16, 32, 64
        student_kwargs, teacher_kwargs = {}, {}
    if args.val_root is not None:
        data.update(val_data="paired", val_root=str(args.val_root.expanduser().resolve()))
    common = dict(task="sr", scale=args.scale, optimizer="adam", weight_decay=0.0, seed=args.seed,
                  batch_size=args.batch_size or batch, patch_size=args.patch_size or patch, **data)
    base = TrainConfig(model="dvmsr", model_kwargs=student_kwargs, epochs=args.epochs or epochs, **common)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model="dvmsr_teacher", model_kwargs=teacher_kwargs,
                                  epochs=args.teacher_epochs or teacher_epochs, **common),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    sweep = SweepConfig(name=args.name or ("dvmsr_smoke" if args.smoke else "dvmsr_div2k"),
                        methods=args.methods, num_samples=args.num_samples or samples,
                        workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                        gpus_per_worker=args.gpus_per_worker, teacher_gpus=min(args.gpus_per_worker, 1),
                        storage=str(args.storage), cache_dir=str(args.cache_dir), resume=args.resume, seed=args.seed)
    summary = run_sweep(base, teacher, sweep)
    tests = {"set14": args.set14_root.expanduser().resolve()} if args.set14_root is not None else {}
    if (sweep.directory / "results.parquet").exists():
        add_test_sets(sweep.directory, base, tests, gpus=min(args.gpus_per_worker, 1))
    print((sweep.directory / "summary.md").read_text() if (sweep.directory / "summary.md").exists() else summary)
    print(f"results: {sweep.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
