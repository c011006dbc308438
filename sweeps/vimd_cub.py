"""ViMD and its baselines on CUB-200-2011, swept with Ray Tune + Optuna (seed 000: Chen et al., "Vision Mamba
Distillation for Low-resolution Fine-grained Image Classification", IEEE SPL 2025).

    python sweeps/vimd_cub.py --smoke                          # the whole pipeline on the built-in demo data
    python sweeps/vimd_cub.py --data-root /data/CUB_200_2011   # the paper's setting: 224 HR, 56 LR
    python sweeps/vimd_cub.py --address auto ...               # on a running cluster (ray up cluster.yaml)

Every method here trains the same low-resolution student, SRVM-Net (an x4 SRResNet + Vim-Ti on the 56 x 56
bicubic-downscaled image), so the sweep compares distillation methods for one LR student: "none" is SRVM-Net
with cross-entropy alone, "kd" adds Hinton's KD from the HR teacher's logits, "vimd" the paper's loss (KD plus
every layer's hidden states). The teacher, HRVM-Net (Vim-Ti on the 224 x 224 image), is trained first unless
--teacher names a checkpoint, and kept in the cache directory. Its logits and 24 layers of hidden states are too
large to cache for CUB (about 3.6 MB per image view), so the teacher service serves them live from its actors;
the smoke run's are small and cached. Results go to <storage>/<name>/.

CUB-200-2011 is not downloaded automatically: its host (https://www.vision.caltech.edu/datasets/cub_200_2011/)
hands the archive out through a browser page. Download CUB_200_2011.tgz there, extract it, and pass the
CUB_200_2011 directory (the one holding images.txt) with --data-root.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raykd.data.builtin import default_cache_dir
from raykd.train.config import TrainConfig
from raykd.tune.driver import connect, prepare_teacher
from raykd.tune.sweep import SweepConfig, run_sweep

METHODS = ["none", "kd", "vimd"]
CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the CUB_200_2011 directory, or one containing it (default: <cache-dir>/datasets/CUB_200_2011)")
    p.add_argument("--smoke", action="store_true",
                   help="small end-to-end run on the built-in demo data (minutes on a laptop CPU)")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default 24; smoke 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 40; smoke 2)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="epochs to train the teacher (default 80; smoke 4)")
    p.add_argument("--methods", nargs="+", default=METHODS, help=f"methods to sweep (default {' '.join(METHODS)})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--teacher", type=Path, default=None,
                   help="HRVM-Net checkpoint directory (skips teacher training); it must see image_size inputs")
    p.add_argument("--teacher-mode", choices=("auto", "cached", "live"), default="auto",
                   help="serve teacher outputs from the cache or live from actors (default: by size)")
    p.add_argument("--sr-checkpoint", type=Path, default=None,
                   help="pre-trained SRResNet x4 weights for SRVM-Net's SR sub-network (frozen, as in the paper)")
    p.add_argument("--finetune-sr", action="store_true",
                   help="train the pre-trained SR sub-network jointly instead of freezing it")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; smoke 64")
    p.add_argument("--storage", type=Path, default=Path("runs"), help="where sweep results go")
    p.add_argument("--name", default=None, help="sweep name (default vimd_cub, smoke: vimd_smoke)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="teacher outputs and trained teachers (default $RAYKD_CACHE or ~/.cache/raykd)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _find_cub(root: Path) -> Path | None:
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.finetune_sr and args.sr_checkpoint is None:
        print("--finetune-sr needs --sr-checkpoint (without one the SR sub-network is trained from scratch anyway)",
              file=sys.stderr)
        return 2
    if args.smoke:
        # 32-pixel digits, 8-pixel LR, patch 16: a 2 x 2 token grid keeps the pure-PyTorch scan cheap on two cores
        data = dict(data="demo", data_root=None, image_size=32, lr=1e-3)
        epochs, teacher_epochs, samples, batch, grace = 2, 4, 4, 64, 2
        teacher_model, student_model = "vim_micro", "srvm_micro"
    else:
        root = _find_cub(args.data_root or args.cache_dir / "datasets" / "CUB_200_2011")
        if root is None:
            looked = args.data_root or args.cache_dir / "datasets" / "CUB_200_2011"
            print(f"CUB-200-2011 not found at {looked} (no images.txt there or in {looked / 'CUB_200_2011'}).\n"
                  f"raykd cannot download it: its host ({CUB_URL}) serves the archive through a browser page. "
                  "Download CUB_200_2011.tgz (about 1.1 GB) there, extract it, and point --data-root at the "
                  f"extracted CUB_200_2011 directory (or put it at {args.cache_dir / 'datasets' / 'CUB_200_2011'}); "
                  "or try the pipeline on built-in data with --smoke.", file=sys.stderr)
            return 2
        data = dict(data="cub200", data_root=str(root), image_size=224, lr=5e-4)
        epochs, teacher_epochs, samples, batch, grace = 40, 80, 24, 32, 10
        teacher_model, student_model = "vim_tiny", "srvm_tiny"
    epochs = args.epochs or epochs
    # ASHA's grace period: the hidden-state term dominates ViMD's first epoch (in the smoke run its student is at
    # chance after epoch 1 and ahead of "none" after epoch 2), so early stopping must not judge it on epoch 1
    grace = min(grace, epochs)
    common = dict(batch_size=args.batch_size or batch, seed=args.seed, optimizer="adam", weight_decay=0.0,
                  num_views=2, **data)
    student_kwargs = {"img_size": data["image_size"]}  # the super-resolved size: LR * 4 = the HR size
    if args.sr_checkpoint is not None:
        student_kwargs.update(sr_checkpoint=str(args.sr_checkpoint.expanduser().resolve()),
                              freeze_sr=not args.finetune_sr)
    # lr_factor 4 with lr_mode "down" is the paper's bicubic 224 -> 56; SRVM-Net's x4 SR brings it back to 224.
    # student_input "lr": the student sees the LR image under every method, "none" and "kd" included.
    base = TrainConfig(model=student_model, model_kwargs=student_kwargs, epochs=epochs, lr_factor=4,
                       lr_mode="down", student_input="lr", **common)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model=teacher_model, model_kwargs={"img_size": data["image_size"]},
                                  epochs=args.teacher_epochs or teacher_epochs, **common),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    sweep = SweepConfig(name=args.name or ("vimd_smoke" if args.smoke else "vimd_cub"),
                        methods=args.methods, num_samples=args.num_samples or samples,
                        workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                        gpus_per_worker=args.gpus_per_worker, teacher_gpus=min(args.gpus_per_worker, 1),
                        grace_period=grace, teacher_mode=args.teacher_mode, storage=str(args.storage),
                        cache_dir=str(args.cache_dir), resume=args.resume, seed=args.seed)
    summary = run_sweep(base, teacher, sweep)
    print((sweep.directory / "summary.md").read_text() if (sweep.directory / "summary.md").exists() else summary)
    print(f"results: {sweep.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
