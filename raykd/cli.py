"""Command line: ``raykd train`` (a model alone, e.g. a teacher), ``raykd distill`` (a student from a teacher) and
``raykd eval-sr`` (an SR model's PSNR/SSIM on benchmark sets, as SR papers tabulate them)."""
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
    e = sub.add_parser("eval-sr", help="PSNR/SSIM of an SR model on benchmark sets (Y channel, border = scale)")
    e.add_argument("--model", default=None, help="raykd checkpoint directory, or a registry name with --weights")
    e.add_argument("--model-kwargs", default="{}", help="JSON kwargs for a registry name, e.g. '{\"img_size\": 48}'")
    e.add_argument("--weights", type=Path, default=None, help="weights file for a registry name")
    e.add_argument("--official", action="store_true",
                   help="--weights is a checkpoint released with the reference code (EDSR, RCAN, SwinIR, ...)")
    e.add_argument("--set", dest="sets", action="append", required=True, type=Path, metavar="DIR",
                   help="benchmark folder with HR/ and LR_bicubic/X{scale}/ (repeat for several)")
    e.add_argument("--scale", type=int, required=True)
    e.add_argument("--bicubic", action="store_true", help="add the MATLAB-bicubic baseline row")
    e.add_argument("--tile", type=int, default=TrainConfig.tile,
                   help="LR tile side of whole-image inference (0: untiled)")
    e.add_argument("--tile-overlap", type=int, default=TrainConfig.tile_overlap)
    e.add_argument("--device", default="auto")
    return parser


def eval_sr(args: argparse.Namespace) -> int:
    """``raykd eval-sr``: one row per model (and the bicubic baseline), one PSNR/SSIM column per set, measured by
    :meth:`raykd.train.sr_task.SRTask.evaluate` (BT.601 Y with MATLAB rounding, greyscale images on their grey
    channel, ``scale`` pixels of border cropped)."""
    from raykd.models import create_model
    from raykd.models.sr_common import load_official
    from raykd.teachers.specs import TeacherSpec
    from raykd.train.checkpoint import load_model_weights
    from raykd.train.loop import resolve_device
    from raykd.train.sr_task import SRTask

    if args.model is None and not args.bicubic:
        raise SystemExit("eval-sr: nothing to evaluate; give --model and/or --bicubic")
    if args.weights is not None and (args.model is None or Path(args.model).is_dir()):
        raise SystemExit("eval-sr: --weights goes with --model REGISTRY_NAME (a checkpoint directory has its own)")
    if args.official and args.weights is None:
        raise SystemExit("eval-sr: --official says how to read --weights FILE; give --weights")
    device = resolve_device(args.device)
    rows: list[tuple[str, Any]] = [("Bicubic", create_model("bicubic", scale=args.scale))] if args.bicubic else []
    if args.model is not None and Path(args.model).is_dir():
        spec = TeacherSpec.from_checkpoint(args.model)
        if spec.model_kwargs.get("scale", args.scale) != args.scale:
            raise SystemExit(f"eval-sr: {args.model} holds an x{spec.model_kwargs['scale']} model, not x{args.scale}")
        rows.append((Path(args.model).name, spec.build(device)))
    elif args.model is not None:
        if args.weights is None:
            raise SystemExit(f"eval-sr: --model {args.model} is a registry name; give its --weights FILE (or pass a "
                             "raykd checkpoint directory)")
        model = create_model(args.model, scale=args.scale, **json.loads(args.model_kwargs))
        if args.official:
            load_official(model, args.weights)
        else:
            load_model_weights(model, args.weights)
        rows.append((args.model, model.eval().requires_grad_(False).to(device)))
    # a benchmark folder is its own "train" split here too: SRTask needs one, and evaluation only reads the val set
    tasks = [(folder.name, SRTask(TrainConfig(task="sr", data="paired", data_root=str(folder), val_root=str(folder),
                                              scale=args.scale, patch_size=1, tile=args.tile,
                                              tile_overlap=args.tile_overlap, check_data=False)))
             for folder in args.sets]
    print(f"x{args.scale}: PSNR (dB) / SSIM on Y (BT.601; grey images on their channel), {args.scale}-pixel border")
    print("| model | " + " | ".join(name for name, _ in tasks) + " |")
    print("|---" * (len(tasks) + 1) + "|")
    for label, model in rows:
        cells = [task.evaluate(model, device) for _, task in tasks]
        print(f"| {label} | " + " | ".join(f"{c['val_psnr']:.2f}/{c['val_ssim']:.4f}" for c in cells) + " |",
              flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eval-sr":
        return eval_sr(args)
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
