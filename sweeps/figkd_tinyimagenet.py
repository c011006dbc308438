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

from raykd.data.builtin import default_cache_dir
from raykd.train.config import TrainConfig
from raykd.tune.driver import connect, prepare_teacher
from raykd.tune.sweep import SweepConfig, run_sweep

METHODS = ["none", "kd", "dkd", "figkd", "dfd"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the tiny-imagenet-200 directory (default: <cache-dir>/datasets/tiny-imagenet-200)")
    p.add_argument("--download", action="store_true", help="download TinyImageNet (237 MiB) if it is not there")
    p.add_argument("--smoke", action="store_true",
                   help="small end-to-end run on the built-in demo data (minutes on a laptop CPU)")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default 32; smoke 6)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 30; smoke 2)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="epochs to train the teacher (default 60)")
    p.add_argument("--methods", nargs="+", default=METHODS, help=f"methods to sweep (default {' '.join(METHODS)})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint directory (skips teacher training)")
    p.add_argument("--teacher-model", default=None, help="registry/timm name (default resnet32x4; smoke resnet8x4)")
    p.add_argument("--student-model", default=None, help="registry/timm name (default resnet8x4; smoke resnet8)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128; smoke 64")
    p.add_argument("--storage", type=Path, default=Path("runs"), help="where sweep results go")
    p.add_argument("--name", default=None, help="sweep name (default figkd_tinyimagenet, smoke: figkd_smoke)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="teacher outputs, trained teachers and datasets (default $RAYKD_CACHE or ~/.cache/raykd)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        # 16-pixel digits (a quarter of the 32-pixel cost) and a smaller pair, resnet8x4 -> resnet8: minutes on
        # two cores, where resnet32x4 needs more epochs than a smoke run has to learn the digits at all
        data = dict(data="demo", data_root=None, image_size=16, lr=0.1)
        epochs, teacher_epochs, samples, batch = 2, 4, 6, 64
        args.teacher_model = args.teacher_model or "resnet8x4"
        args.student_model = args.student_model or "resnet8"
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
        data = dict(data="tinyimagenet", data_root=str(root), image_size=64, lr=0.05)
        epochs, teacher_epochs, samples, batch = 30, 60, 32, 128
        args.teacher_model = args.teacher_model or "resnet32x4"
        args.student_model = args.student_model or "resnet8x4"
    epochs = args.epochs or epochs
    base = TrainConfig(model=args.student_model, epochs=epochs, batch_size=args.batch_size or batch,
                       seed=args.seed, num_views=2, **data)
    connect(args.address)
    teacher = prepare_teacher(
        args.teacher, TrainConfig(model=args.teacher_model, epochs=args.teacher_epochs or teacher_epochs,
                                  batch_size=base.batch_size, seed=args.seed, **data),
        cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
    sweep = SweepConfig(name=args.name or ("figkd_smoke" if args.smoke else "figkd_tinyimagenet"),
                        methods=args.methods, num_samples=args.num_samples or samples,
                        workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                        gpus_per_worker=args.gpus_per_worker, teacher_gpus=min(args.gpus_per_worker, 1),
                        storage=str(args.storage), cache_dir=str(args.cache_dir), resume=args.resume, seed=args.seed)
    summary = run_sweep(base, teacher, sweep)
    print((sweep.directory / "summary.md").read_text() if (sweep.directory / "summary.md").exists() else summary)
    print(f"results: {sweep.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
