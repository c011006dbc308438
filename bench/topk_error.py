"""What ``--top-k`` costs on a real teacher (issue 17): the teacher's logits on real images, and for each k the bytes
a stored table row takes and the KL between the full and the top-k softened distributions, what a student reads
at KD's temperatures (:func:`raykd.teachers.store.top_k_error`; FKD, Shen & Xing, ECCV 2022, stores soft labels
this way).

On ``--data-root`` (default: the 10 real TinyImageNet classes beside the project, ``../shared/data/cls/
tiny-imagenet-10``) it runs the teacher checkpoint ``--teacher-dir`` (default: the one ``bench/reproduce_cls.py``
trains, ``runs/reproduce_cls/teacher``) on the ``--split`` (val: the centred images; train: view 0 of every
training image, what the first epoch's table holds), at the image size the teacher was trained at (its
``meta.json``; ``--image-size`` to override), and prints, per stored precision, a table of k vs bytes per row
(the logits' columns only; the ``index`` column adds 8) vs mean / max KL (nats) and mean total variation at each
``--temperatures`` (1 and 4, KD's). ``--train-epochs N`` trains a quick teacher there first when none exists.

    .venv/bin/python bench/topk_error.py      # the wrn_16_2 teacher of bench/reproduce_cls.py --setting gap, 16 px
    .venv/bin/python bench/topk_error.py --train-epochs 5 --teacher-dir runs/topk_teacher --image-size 16
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from raykd.config import DataConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from raykd.data.arrays import load_split
from raykd.teachers.sources import run_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable, top_k_error
from raykd.train.loop import train
from raykd.train.tasks import build_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cls" / "tiny-imagenet-10"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-dir", type=Path, default=Path("runs") / "reproduce_cls" / "teacher")
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--image-size", type=int, default=None, help="default: the teacher's (its meta.json), else 64")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--ks", type=int, nargs="+", default=None, help="default: 1 2 3 5 10 20 50 100 below C, and C")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--precisions", nargs="+", choices=("float16", "float32"), default=["float16", "float32"])
    p.add_argument("--train-epochs", type=int, default=0,
                   help="with no checkpoint at --teacher-dir, train one there first (--teacher-model, this many "
                        "epochs, fresh views, the CIFAR KD recipe's SGD)")
    p.add_argument("--teacher-model", default="wrn_16_2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if not (args.data_root / "wnids.txt").is_file():
        raise SystemExit(f"no TinyImageNet-layout data at {args.data_root} (wnids.txt missing): pass --data-root")
    meta_file = args.teacher_dir / "meta.json"
    trained = json.loads(meta_file.read_text())["config"]["data"] if meta_file.is_file() else {}
    size = args.image_size or trained.get("image_size", 64)
    data = DataConfig(dataset="tinyimagenet", root=str(args.data_root), image_size=size,
                      crop_padding=trained.get("crop_padding", max(1, size // 8)))  # the teacher's training views
    splits = {split: load_split(data, split, None) for split in ("train", "val")}
    if not meta_file.is_file():
        if not args.train_epochs:
            raise SystemExit(f"no teacher checkpoint at {args.teacher_dir}: give --teacher-dir, or --train-epochs N")
        _train(args, data, splits)
    logits, top1 = _teacher_logits(args, data, splits)
    meta = json.loads(meta_file.read_text())
    c = logits.shape[1]
    ks = sorted({k for k in (args.ks or (1, 2, 3, 5, 10, 20, 50, 100)) if k < c} | {c})
    p1 = torch.from_numpy(logits).softmax(1)
    outside = 1 - p1.topk(min(5, c), 1).values.sum(1).mean()
    print(f"teacher {meta['model']} ({args.teacher_dir}, epoch {meta.get('epoch')}), {args.data_root.name} "
          f"{args.split}, {len(logits)} images at {size} px, {c} classes: top-1 {top1:.2f}%, mean top-1 probability "
          f"{p1.max(1).values.mean():.3f}, mean mass outside the top 5 {outside:.4f} (T = 1)")
    for precision in args.precisions:
        print(f"\n{precision} tables (k = {c}: every logit, stored uncompacted without --top-k)")
        print(_table(logits, ks, args.temperatures, precision, len(splits["train"])))


def _train(args: argparse.Namespace, data: DataConfig, splits: dict) -> None:
    cfg = TrainConfig(model=ModelConfig(args.teacher_model), data=data,
                      optim=OptimConfig(lr=0.05, epochs=args.train_epochs, batch_size=128),
                      runtime=RuntimeConfig(device=args.device))
    started = time.perf_counter()
    top1 = train(cfg, task=build_task(data, 0, splits), checkpoint_dir=args.teacher_dir)["val_top1"]
    print(f"trained {args.teacher_model} for {args.train_epochs} epochs: top-1 {top1:.2f}% "
          f"({time.perf_counter() - started:.0f} s)", flush=True)


@torch.no_grad()
def _teacher_logits(args: argparse.Namespace, data: DataConfig, splits: dict) -> tuple[np.ndarray, float]:
    """The teacher's float32 logits on ``--split`` (val: centred; train: view 0) and its top-1 there."""
    task = build_task(data, 0, splits)
    batches = task.val if args.split == "val" else task.train
    model = TeacherSpec.from_checkpoint(args.teacher_dir).build(args.device)
    device = torch.device(args.device)
    out, correct = [], 0
    for start in range(0, len(batches), 500):
        batch = batches.batch(np.arange(start, min(len(batches), start + 500)), 0, device, ("hr",))
        logits = run_teacher(model, batch["hr"], ("logits",))["logits"]
        correct += (logits.argmax(1) == batch["label"]).sum().item()
        out.append(logits.cpu().numpy())
    return np.concatenate(out), 100.0 * correct / len(batches)


def _table(logits: np.ndarray, ks: list[int], temperatures: list[float], precision: str, train_rows: int) -> str:
    """k | bytes a row | one epoch's table of the train split | per T: mean KL, max KL, mean TV."""
    c = logits.shape[1]
    head = "| k | bytes/row | train table | " + " | ".join(f"KL mean T={t:g} | KL max T={t:g} | TV T={t:g}"
                                                          for t in temperatures) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(temperatures))]
    for k in ks:
        columns, _ = TeacherTable.columns(np.arange(8), {"logits": logits[:8]}, k if k < c else None, precision)
        row = sum(v.nbytes for name, v in columns.items() if name.startswith("logits")) // 8
        cells = [f"{k}", f"{row}", f"{row * train_rows / 2**20:.2f} MiB"]
        for t in temperatures:
            e = top_k_error(logits, k, t, precision)
            cells += [f"{e['kl_mean']:.2e}", f"{e['kl_max']:.2e}", f"{e['tv_mean']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
