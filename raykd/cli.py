"""Command line: ``raykd train`` (a model alone, e.g. a teacher) and ``raykd distill`` (a student from a teacher)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from raykd.train.config import TrainConfig


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["T=4", "wavelet=db2"]`` -> ``{"T": 4, "wavelet": "db2"}`` (values parsed as JSON where they are JSON)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _add_common(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    p.add_argument("--data", default=defaults.data,
                   help="dataset kind: demo, tinyimagenet, cifar10, cifar100, imagefolder, cub200")
    p.add_argument("--data-root", default=None, help="dataset directory (not needed for demo)")
    p.add_argument("--model", default=defaults.model, help="registry or timm model name")
    p.add_argument("--image-size", type=int, default=defaults.image_size)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--out", required=True, help="checkpoint directory (written after every epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raykd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model on its own (e.g. a teacher)")
    _add_common(t)
    d = sub.add_parser("distill", help="distil a student from a teacher checkpoint")
    _add_common(d)
    d.add_argument("--teacher", required=True, help="teacher checkpoint directory (from `raykd train`)")
    d.add_argument("--method", default="kd", help="none, kd, dkd, figkd, dfd, fitnet, at")
    d.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyperparameter")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raykd.train.loop import train

    cfg = TrainConfig(model=args.model, data=args.data, data_root=args.data_root, image_size=args.image_size,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      steps_per_epoch=args.steps_per_epoch, seed=args.seed, device=args.device)
    if args.command == "distill":
        cfg.method, cfg.method_params, cfg.teacher = args.method, parse_params(args.param), args.teacher
    out = Path(args.out)
    if args.resume and not out.is_dir():
        raise SystemExit(f"--resume: no checkpoint at {out}")

    def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
        print(f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.4f}  top1 {metrics['val_top1']:.2f}  "
              f"top5 {metrics['val_top5']:.2f}  ({metrics['samples_per_s']:.0f} samples/s)", flush=True)

    final = train(cfg, report=report, checkpoint_dir=out, resume_from=out if args.resume else None, progress=True)
    print(f"best top-1 {final['best_val_top1']:.2f}; checkpoint in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
