"""MTKD (Jiang et al., ECCV 2024) on DIV2K: three SR teachers, the knowledge aggregator, then a student sweep.

    python sweeps/mtkd_div2k.py --smoke                                    # the whole pipeline on built-in data
    python sweeps/mtkd_div2k.py --download --val-root benchmark/Set5 --set14-root benchmark/Set14
    python sweeps/mtkd_div2k.py --data-root /data/DIV2K --val-root benchmark/Set5 --student rcan_light
    python sweeps/mtkd_div2k.py --address auto --gpus-per-worker 1 ...     # on a cluster (ray up cluster.yaml)

1. Teachers: SwinIR, RCAN and EDSR (the full models) are trained on DIV2K once and kept in the cache directory,
   unless --teacher-checkpoints brings them (see below).
2. Stage 1 (MTKD Sec. 3.1): the teachers' whole-image outputs are computed once and cached, the knowledge
   aggregator is trained on them with L1 to the ground truth, and the aggregated teacher (teachers + aggregator,
   one checkpoint) is written to the cache directory. Its held-out PSNR is printed against each teacher's.
3. Stage 2 (Sec. 3.2): a sweep of the student (EDSR-baseline; RCAN-light or SwinIR-light with --student) over
   ``none`` (alone), ``l1kd`` (distilled from the best single teacher) and ``mtkd`` (from the aggregated teacher:
   ``alpha``, the DWT levels ``K`` and the wavelet searched by Optuna). Every teacher's outputs, the aggregated one
   included, are computed once and shared by all trials. Trials are validated on --val-root (Set5 in the
   benchmark layout HR/ + LR_bicubic/X{s}/; DIV2K's 100 valid images without it); with --set14-root every
   trial's final student is measured on Set14 too, and both sets' PSNR/SSIM (Y channel, scale-pixel border) join
   the results table. Results go to <storage>/<name>/.

Published teachers: --teacher-checkpoints swinir=FILE rcan=FILE edsr=FILE takes raykd checkpoint directories or
the files released with the reference code. A released file is loaded strictly with
``raykd.models.sr_common.load_official`` into the registry model of that name (BasicSR/KAIR ``params_ema`` /
``params`` wrappers are unwrapped) and saved once as a raykd checkpoint under <cache-dir>/teachers/. The x4 files:

* SwinIR: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth`` (github.com/JingyunLiang/SwinIR, releases v0.0),
  trained on 48-pixel patches: add --teacher-kwargs swinir='{"img_size": 48}' (the DF2K ``s64w8`` file needs none);
* RCAN: ``RCAN_BIX4.pt`` (github.com/yulunzhang/RCAN, RCAN_TestCode/model);
* EDSR: ``edsr_x4-4f62e9ef.pt`` (github.com/sanghyun-son/EDSR-PyTorch, https://cv.snu.ac.kr/research/EDSR/models/).

By hand, the same conversion is::

    from raykd.models import create_model
    from raykd.models.sr_common import load_official
    from raykd.train.checkpoint import save_checkpoint
    model = load_official(create_model("swinir", scale=4, img_size=48), "001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth")
    save_checkpoint("teachers/swinir_x4", model=model,
                    meta={"model": "swinir", "model_kwargs": {"scale": 4, "img_size": 48}})

and ``raykd eval-sr --model teachers/swinir_x4 --set benchmark/Set5 --scale 4`` should then print the paper's
Set5 figure (SwinIR 32.72, RCAN 32.63, EDSR 32.46 dB at x4).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from raykd.train.config import TrainConfig
from raykd.tune.driver import (add_div2k_arguments, add_sweep_arguments, connect, find_div2k, prepare_teacher,
                               print_summary, profile, sweep_config)
from raykd.tune.report import add_test_sets
from raykd.tune.sweep import run_sweep

METHODS = ["none", "l1kd", "mtkd"]
TEACHERS = ["swinir", "rcan", "edsr"]
STUDENTS = ["edsr_baseline", "rcan_light", "swinir_light"]
# --smoke: a few channels per network, so that three teachers, stage 1 and the sweep fit in minutes on two cores
SMOKE_TEACHERS = {
    "swinir": {"embed_dim": 12, "depths": (1,), "num_heads": (2,), "window_size": 4, "img_size": 16},
    "rcan": {"n_resgroups": 1, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
    "edsr": {"n_resblocks": 2, "n_feats": 16},
}
SMOKE_STUDENTS = {
    "edsr_baseline": {"n_resblocks": 1, "n_feats": 8},
    "rcan_light": {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    "swinir_light": {"embed_dim": 12, "depths": (1,), "num_heads": (2,), "window_size": 4, "img_size": 16},
}
# --smoke's aggregator learns a correction to the teachers' mean (raykd's mean_residual option): from a
# few dozen steps the paper's network has not yet learnt to reproduce an image at all
SMOKE_AGGREGATOR = {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "mean_residual": True}


def _named(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"{what} expects NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_div2k_arguments(p)
    p.add_argument("--teachers", nargs="+", default=TEACHERS, help=f"teacher models (default {' '.join(TEACHERS)})")
    p.add_argument("--teacher-checkpoints", nargs="+", default=[], metavar="NAME=PATH",
                   help="a teacher's raykd checkpoint directory or released weights file (skips its training)")
    p.add_argument("--teacher-kwargs", nargs="+", default=[], metavar="NAME=JSON",
                   help="model kwargs of a teacher, e.g. swinir='{\"img_size\": 48}'")
    p.add_argument("--stage1-epochs", type=int, default=None, help="aggregator epochs (default 100; smoke 10)")
    p.add_argument("--student", choices=STUDENTS, default="edsr_baseline", help="the student (default edsr_baseline)")
    p.add_argument("--patch-size", type=int, default=None, help="LR training patch side (default 48; smoke 12)")
    add_sweep_arguments(p, methods=METHODS, name="mtkd_div2k",
                        full=dict(num_samples=24, epochs=100, teacher_epochs=300, batch_size=16),
                        smoke=dict(num_samples=6, epochs=2, teacher_epochs=3, batch_size=8))
    return p.parse_args(argv)


def official_teacher(name: str, path: Path, kwargs: dict[str, Any], scale: int, cache_dir: Path):
    """A released weights file as a raykd checkpoint directory (converted once, keyed by the file's content)."""
    from raykd.models import create_model
    from raykd.models.sr_common import load_official
    from raykd.teachers.cache import file_sha256
    from raykd.teachers.specs import TeacherSpec
    from raykd.train.checkpoint import META_FILE, save_checkpoint

    model_kwargs = {**kwargs, "scale": scale}
    target = cache_dir / "teachers" / f"official-{name}-x{scale}-{file_sha256(path)[:16]}"
    if not (target / META_FILE).is_file():
        model = load_official(create_model(name, **model_kwargs), path)
        save_checkpoint(target, model=model, meta={"model": name, "model_kwargs": model_kwargs, "source": str(path)})
        print(f"converted {path} -> {target}")
    return TeacherSpec.from_checkpoint(target, name)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.cache_dir = args.cache_dir.expanduser().resolve()
    checkpoints = {n: Path(p).expanduser().resolve() for n, p in _named(args.teacher_checkpoints,
                                                                         "--teacher-checkpoints").items()}
    kwargs = {n: json.loads(v) for n, v in _named(args.teacher_kwargs, "--teacher-kwargs").items()}
    unknown = sorted((set(checkpoints) | set(kwargs)) - set(args.teachers))
    if unknown:
        raise SystemExit(f"--teacher-checkpoints/--teacher-kwargs name {unknown}, which are not among --teachers "
                         f"{args.teachers}")
    if args.smoke:
        # the scikit-image photo demo (6 train, 2 val images) under the cache dir, 12-pixel LR patches: the
        # pipeline end to end in minutes on two cores, not a result
        data = dict(data="demo_sr", data_root=str(args.cache_dir / "datasets" / "sr-demo"), patches_per_image=4,
                    lr=2e-3)
        stage1_epochs, patch = 10, 12
        stage1 = dict(patch_size=16, patches_per_image=16)
        kwargs = {t: {**SMOKE_TEACHERS.get(t, {}), **kwargs.get(t, {})} for t in args.teachers}
        student_kwargs, aggregator_kwargs = SMOKE_STUDENTS[args.student], SMOKE_AGGREGATOR
    else:
        root = find_div2k(args.data_root, args.cache_dir, args.scale, args.download)
        if root is None:
            return 2
        # EDSR/RCAN/SwinIR train on 48-pixel LR patches (batch 16, Adam); the aggregator on 64 (MTKD Sec. 4.1)
        data = dict(data="div2k", data_root=str(root), patches_per_image=16, lr=2e-4)
        stage1_epochs, patch = 100, 48
        stage1 = dict(patch_size=64)
        student_kwargs, aggregator_kwargs = {}, {}
    missing = [f"{flag} {path}" for flag, path in (("--val-root", args.val_root), ("--set14-root", args.set14_root))
               if path is not None and not (path.expanduser() / "HR").is_dir()]
    if missing:
        raise SystemExit(f"no benchmark set (HR/ and LR_bicubic/X{args.scale}/) at {', '.join(missing)}")
    if args.val_root is not None:
        data.update(val_data="paired", val_root=str(args.val_root.expanduser().resolve()))
    sizes = profile(args)
    common = dict(task="sr", scale=args.scale, optimizer="adam", weight_decay=0.0, schedule="cosine", seed=args.seed,
                  batch_size=sizes["batch_size"], patch_size=args.patch_size or patch, **data)
    connect(args.address)

    teachers = []
    for name in args.teachers:
        path = checkpoints.get(name)
        if path is not None and path.is_file():
            teachers.append(official_teacher(name, path, kwargs.get(name, {}), args.scale, args.cache_dir))
            continue
        spec = prepare_teacher(path, TrainConfig(model=name, model_kwargs=kwargs.get(name, {}),
                                                 epochs=sizes["teacher_epochs"], **common),
                               cache_dir=args.cache_dir, gpus=args.gpus_per_worker)
        teachers.append(dataclasses.replace(spec, name=name))

    from raykd.methods.mtkd import prepare_mtkd_teacher

    result = prepare_mtkd_teacher(
        teachers, TrainConfig(model="mtkd_aggregator", epochs=args.stage1_epochs or stage1_epochs,
                              **{**common, **stage1}),
        cache_dir=args.cache_dir, aggregator_kwargs=aggregator_kwargs,
        num_gpus=min(args.gpus_per_worker, 1) / len(teachers),
        progress=lambda epoch, loss: print(f"aggregator epoch {epoch}: L1 {loss:.4f}", flush=True))
    print(f"\nMTKD stage 1, held-out ({common.get('val_root') or common['data']} val):\n{result.table()}\n")

    per_method = {"l1kd": next(t for t in teachers if t.name == result.best_teacher), "mtkd": result.spec}
    base = TrainConfig(model=args.student, model_kwargs=student_kwargs, epochs=sizes["epochs"], **common)
    sweep = sweep_config(args)
    summary = run_sweep(base, {m: s for m, s in per_method.items() if m in args.methods}, sweep)
    tests = {"set14": args.set14_root.expanduser().resolve()} if args.set14_root is not None else {}
    if (sweep.directory / "results.parquet").exists():
        add_test_sets(sweep.directory, base, tests)
    print_summary(sweep, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
