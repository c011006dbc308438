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

from raykd.train.config import TrainConfig
from raykd.tune.driver import add_sweep_arguments, connect, prepare_teacher, print_summary, profile, sweep_config
from raykd.tune.sweep import run_sweep

METHODS = ["none", "kd", "vimd"]
CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the CUB_200_2011 directory, or one containing it (default: <cache-dir>/datasets/CUB_200_2011)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="HRVM-Net checkpoint directory (skips teacher training); it must take image_size inputs")
    p.add_argument("--teacher-mode", choices=("auto", "cached", "live"), default="auto",
                   help="serve teacher outputs from the cache or live from actors (default: by size)")
    p.add_argument("--sr-checkpoint", type=Path, default=None,
                   help="pre-trained SRResNet x4 weights for SRVM-Net's SR sub-network (frozen, as in the paper)")
    p.add_argument("--finetune-sr", action="store_true",
                   help="train the pre-trained SR sub-network jointly instead of freezing it")
    add_sweep_arguments(p, methods=METHODS, name="vimd_cub",
                        full=dict(num_samples=24, epochs=40, teacher_epochs=80, batch_size=32),
                        smoke=dict(num_samples=4, epochs=2, teacher_epochs=4, batch_size=64))
    return p.parse_args(argv)


def find_cub(data_root: Path | None, cache_dir: Path) -> Path | None:
    """The CUB_200_2011 directory (the one holding images.txt), else None after telling the user where it looked
    and how to get it."""
    # absolute: Tune runs each trial in its own working directory
    root = (data_root or cache_dir / "datasets" / "CUB_200_2011").expanduser().resolve()
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    print(f"CUB-200-2011 not found at {root} (no images.txt there, nor under {root / 'CUB_200_2011'}).\n"
          f"raykd cannot download it: its host ({CUB_URL}) hands the archive out through a browser page. "
          "Download CUB_200_2011.tgz (about 1.1 GB) there, extract it, and point --data-root at the extracted "
          f"CUB_200_2011 directory (or put it at {cache_dir / 'datasets' / 'CUB_200_2011'}); or try the pipeline "
          "on built-in data with --smoke.", file=sys.stderr)
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
        teacher_model, student_model, grace = "vim_micro", "srvm_micro", 2
    else:
        root = find_cub(args.data_root, args.cache_dir)
        if root is None:
            return 2
        data = dict(data="cub200", data_root=str(root), image_size=224, lr=5e-4)
        teacher_model, student_model, grace = "vim_tiny", "srvm_tiny", 10
    sizes = profile(args)
    common = dict(batch_size=sizes["batch_size"], seed=args.seed, optimizer="adam", weight_decay=0.0, num_views=2,
                  **data)
    student_kwargs = {"img_size": data["image_size"]}  # the super-resolved size: LR * 4 = the HR size
    if args.sr_checkpoint is not None:
        student_kwargs.update(sr_checkpoint=str(args.sr_checkpoint.expanduser().resolve()),
                              freeze_sr=not args.finetune_sr)
    # lr_factor 4 with lr_mode "down" is the paper's bicubic 224 -> 56; SRVM-Net's x4 SR brings it back to 224.
    # student_input "lr": the student sees the LR image under every method, "none" and "kd" included.
    base = TrainConfig(model=student_model, model_kwargs=student_kwargs, epochs=sizes["epochs"], lr_factor=4,
                       lr_mode="down", student_input="lr", **common)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model=teacher_model, model_kwargs={"img_size": data["image_size"]},
                                  epochs=sizes["teacher_epochs"], **common),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    # ASHA's grace period: the hidden-state term dominates ViMD's first epoch (in the smoke run its student is at
    # chance after epoch 1 and ahead of "none" after epoch 2), so early stopping must not judge it on epoch 1
    sweep = sweep_config(args, grace_period=min(grace, sizes["epochs"]), teacher_mode=args.teacher_mode)
    summary = run_sweep(base, teacher, sweep)
    print_summary(sweep, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
