"""FiGKD and the classification baselines on TinyImageNet, swept with Ray Tune + Optuna.

    python sweeps/figkd_tinyimagenet.py --smoke              # the whole pipeline on the built-in demo data
    python sweeps/figkd_tinyimagenet.py --download           # TinyImageNet into the cache dir, then the sweep
    python sweeps/figkd_tinyimagenet.py --address auto ...   # on a running cluster (ray up cluster.yaml)

The teacher (resnet32x4 by default) is trained first unless --teacher names a checkpoint, and kept in the cache
directory; its outputs are computed once and shared by every trial. Results go to <storage>/<name>/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raykd.train.config import TrainConfig
from raykd.tune.driver import add_sweep_arguments, connect, prepare_teacher, print_summary, profile, sweep_config
from raykd.tune.sweep import run_sweep

METHODS = ["none", "kd", "dkd", "figkd", "dfd"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the tiny-imagenet-200 directory (default: <cache-dir>/datasets/tiny-imagenet-200)")
    p.add_argument("--download", action="store_true", help="download TinyImageNet (237 MiB) if it is not there")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint directory (skips teacher training)")
    p.add_argument("--teacher-model", default=None, help="registry/timm name (default resnet32x4; smoke resnet8x4)")
    p.add_argument("--student-model", default=None, help="registry/timm name (default resnet8x4; smoke resnet8)")
    add_sweep_arguments(p, methods=METHODS, name="figkd_tinyimagenet",
                        full=dict(num_samples=32, epochs=30, teacher_epochs=60, batch_size=128),
                        smoke=dict(num_samples=6, epochs=2, teacher_epochs=4, batch_size=64))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        # 16-pixel digits (a quarter of the 32-pixel cost) and a smaller pair, resnet8x4 -> resnet8: minutes on
        # two cores, where resnet32x4 needs more epochs than a smoke run has to learn the digits at all
        data = dict(data="demo", data_root=None, image_size=16, lr=0.1)
        teacher_model, student_model = "resnet8x4", "resnet8"
    else:
        root = args.data_root or args.cache_dir / "datasets" / "tiny-imagenet-200"
        if not (root / "wnids.txt").is_file():
            if not args.download:
                print(f"TinyImageNet not found at {root} (no wnids.txt there).\n"
                      f"Get it with --download (237 MiB into {root.parent}), point --data-root at an extracted "
                      "tiny-imagenet-200 directory, or try the pipeline on built-in data with --smoke.",
                      file=sys.stderr)
                return 2
            from raykd.data.download import download_tinyimagenet

            root = download_tinyimagenet(root.parent)
        # absolute: Tune runs each trial in its own working directory
        data = dict(data="tinyimagenet", data_root=str(Path(root).resolve()), image_size=64, lr=0.05)
        teacher_model, student_model = "resnet32x4", "resnet8x4"
    sizes = profile(args)
    base = TrainConfig(model=args.student_model or student_model, epochs=sizes["epochs"],
                       batch_size=sizes["batch_size"], seed=args.seed, num_views=2, **data)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model=args.teacher_model or teacher_model, epochs=sizes["teacher_epochs"],
                                  batch_size=sizes["batch_size"], seed=args.seed, **data),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    sweep = sweep_config(args)
    summary = run_sweep(base, teacher, sweep)
    print_summary(sweep, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
