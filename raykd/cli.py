"""Command line: ``raykd train`` (a model alone, e.g. a teacher), ``raykd distill`` (a student from a teacher),
``raykd eval-sr`` (an SR model's PSNR/SSIM on benchmark sets, as SR papers tabulate them), ``raykd sweep NAME``
(a paper sweep, as ``python sweeps/NAME.py``), ``raykd export RUN_DIR`` (a sweep's best student to a directory of
its own), ``raykd evaluate DIR`` (a classifier's accuracy on the val split it was trained with) and ``raykd compare
RUN_A RUN_B`` (two sweeps side by side); ``raykd monitor`` (a Prometheus scraping the Ray nodes, and raykd's
Grafana dashboard); ``raykd verify`` (the cache's store hashed in full)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from raykd.config import (CacheLayout, DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig,
                          TeacherConfig, TrainConfig, default_cache_dir)
from raykd.console import UserError, add_common_flags, json_object, key_values, run_command

__all__ = ["main"]


def _add_run(p: argparse.ArgumentParser) -> None:
    data, optim = DataConfig(), OptimConfig()
    p.add_argument("--data", default=data.dataset,
                   help="dataset: demo, tinyimagenet, cifar10, cifar100, imagefolder, cub200 (or pkg.mod:fn)")
    p.add_argument("--data-root", default=None, help="dataset directory (not needed for demo)")
    p.add_argument("--model", default=ModelConfig().name, help="registry or timm model name (or pkg.mod:fn)")
    p.add_argument("--init-from", default=None, help="start the model from this weights file or checkpoint")
    p.add_argument("--image-size", type=int, default=data.image_size)
    p.add_argument("--epochs", type=int, default=optim.epochs)
    p.add_argument("--batch-size", type=int, default=optim.batch_size)
    p.add_argument("--optimizer", default=optim.name, choices=("sgd", "adam", "adamw"))
    p.add_argument("--lr", type=float, default=optim.lr)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="where decoded data is kept (default "
                   "$RAYKD_CACHE or ~/.cache/raykd)")
    p.add_argument("--out", required=True, help="checkpoint directory (written after every epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_common_flags(p)


def _add_eval_sr(e: argparse.ArgumentParser) -> None:
    """``raykd eval-sr``'s flags."""
    e.add_argument("--model", default=None, help="raykd checkpoint directory, or a registry name with --weights")
    e.add_argument("--model-kwargs", default="{}", help="JSON kwargs for a registry name, e.g. '{\"img_size\": 48}'")
    e.add_argument("--weights", type=Path, default=None,
                   help="weights file for a registry name (raykd's, or a release of the reference code: EDSR, "
                        "RCAN, SwinIR, DVMSR, ...; BasicSR/KAIR wrappers are unwrapped)")
    e.add_argument("--keymap", default=None, help="official key layout of --weights, if not raykd's names")
    e.add_argument("--set", dest="sets", action="append", required=True, type=Path, metavar="DIR",
                   help="benchmark folder with HR/ and LR_bicubic/X{scale}/ (repeat for several)")
    e.add_argument("--scale", type=int, required=True)
    e.add_argument("--bicubic", action="store_true", help="add the MATLAB-bicubic baseline row")
    e.add_argument("--y-channel", default="matlab", choices=("matlab", "float"),
                   help="luma rounded as MATLAB's rgb2ycbcr (the published tables; default) or kept float (BasicSR)")
    e.add_argument("--tile", type=int, default=0, help="LR tile side of whole-image inference (0: whole images, the "
                   "default; tiles bound memory but change the output of networks that see the whole image)")
    e.add_argument("--tile-overlap", type=int, default=16)
    e.add_argument("--device", default="auto")
    add_common_flags(e)


def _add_store_tools(sub: Any) -> None:
    """``raykd monitor`` and ``raykd verify``: the tools that look after a sweep's machines and cache."""
    m = sub.add_parser("monitor", help="run Prometheus on the Ray nodes' metrics (raykd's series live) and put "
                       "raykd's Grafana dashboard beside Ray's; until Ctrl-C")
    m.add_argument("--ray-temp-dir", type=Path, default=Path("/tmp/ray"), help="Ray's temp dir (ray start "
                   "--temp-dir; default /tmp/ray), where Ray lists its nodes' metrics ports")
    m.add_argument("--port", type=int, default=9090, help="Prometheus's port on 127.0.0.1 (default 9090, where "
                   "Ray's dashboard and Grafana look unless RAY_PROMETHEUS_HOST says otherwise)")
    m.add_argument("--scrape-interval", default="10s", help="how often Prometheus reads the nodes (default 10s, "
                   "Ray's export interval)")
    m.add_argument("--data-dir", type=Path, default=CacheLayout.of(default_cache_dir(), "$RAYKD_CACHE").prometheus,
                   help="Prometheus's config, data and log (default <cache>/prometheus)")
    add_common_flags(m)
    y = sub.add_parser("verify", help="hash every table of the cache's store in full (decoded splits, teacher "
                       "tables), naming each damaged one: it is moved aside and the next run that needs it rebuilds it")
    y.add_argument("--cache-dir", default=default_cache_dir(), help="the cache to check (default $RAYKD_CACHE or "
                   "~/.cache/raykd)")
    add_common_flags(y)


def verify(args: argparse.Namespace) -> int:
    """``raykd verify``: every table of the cache's store hashed in full; exit 1 when any was damaged."""
    from raykd.data.store import cache_store, verify_store

    damaged = 0
    for check in verify_store(cache_store(args.cache_dir)):
        if check.problem is None:
            print(f"ok      {check.path} ({check.nbytes / 2**20:.1f} MiB hashed)", flush=True)
        else:
            damaged += 1
            print(f"DAMAGED {check.path}: {check.problem}; moved aside, the next run that needs it rebuilds it",
                  flush=True)
    print(f"{damaged} damaged table(s)" if damaged else "every table matched its sha256")
    return 1 if damaged else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raykd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub.add_parser("train", help="train a model on its own (e.g. a teacher)"))
    d = sub.add_parser("distill", help="distil a student from a teacher checkpoint")
    _add_run(d)
    d.add_argument("--teacher", required=True, help="teacher: a raykd checkpoint directory, or a weights file with "
                   "--teacher-model")
    d.add_argument("--teacher-model", default=None, help="the model a --teacher weights file holds")
    d.add_argument("--teacher-keymap", default=None, help="official layout of a --teacher weights file")
    d.add_argument("--method", default="kd", help="none, kd, dkd, figkd, dfd, fitnet, at, vimd (or pkg.mod:Class)")
    d.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyperparameter")
    _add_eval_sr(sub.add_parser("eval-sr", help="PSNR/SSIM of an SR model on benchmark sets (Y channel, border = "
                                "scale)"))
    x = sub.add_parser("export", help="write a finished sweep's best student (weights, meta.json, model card) to a "
                       "directory of its own")
    x.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the sweep's results, <storage>/<name>")
    x.add_argument("--out", type=Path, required=True, help="new (or empty) directory to write the student to")
    x.add_argument("--trial", default=None, metavar="TRIAL_ID", help="export this trial of results.parquet "
                   "instead of the best student")
    add_common_flags(x)
    v = sub.add_parser("evaluate", help="top-1/top-5 of a classifier (an export or checkpoint directory) on the "
                       "val split of the data it was trained on")
    v.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="raykd export or checkpoint directory")
    v.add_argument("--data-root", default=None, help="the dataset's directory, where it is not where the model "
                   "was trained (its recorded config says where that was)")
    v.add_argument("--cache-dir", default=default_cache_dir(), help="where decoded data is kept (default "
                   "$RAYKD_CACHE or ~/.cache/raykd)")
    v.add_argument("--device", default="auto")
    add_common_flags(v)
    c = sub.add_parser("compare", help="two finished sweeps side by side: each method's result, the winners, "
                                       "the teachers, and every config field that differs")
    c.add_argument("runs", type=Path, nargs=2, metavar="RUN_DIR", help="results directories, <storage>/<name>")
    _add_store_tools(sub)
    s = sub.add_parser("sweep", help="run a paper sweep (as python sweeps/NAME.py); NAME --help lists its flags",
                       add_help=False)
    s.add_argument("name")
    s.add_argument("flags", nargs=argparse.REMAINDER)
    return parser


def eval_sr(args: argparse.Namespace) -> int:
    """``raykd eval-sr``: one row per model (and the bicubic baseline), one PSNR/SSIM column per set, measured by
    :meth:`raykd.train.tasks.SRTask.evaluate` (BT.601 Y, greyscale images on their grey channel, ``scale`` pixels
    of border cropped)."""
    from raykd.models.build import build_model, checkpoint_entry
    from raykd.train.loop import resolve_device
    from raykd.train.tasks import build_task

    if args.model is None and not args.bicubic:
        raise UserError("eval-sr: nothing to evaluate; give --model and/or --bicubic")
    if args.weights is not None and (args.model is None or Path(args.model).is_dir()):
        raise UserError("eval-sr: --weights goes with --model REGISTRY_NAME (a checkpoint directory has its own)")
    device = resolve_device(args.device)
    rows: list[tuple[str, Any]] = [("Bicubic", build_model("bicubic", {"scale": args.scale}))] if args.bicubic else []
    if args.model is not None and Path(args.model).is_dir():
        name, kwargs = checkpoint_entry(args.model)
        if kwargs.get("scale", args.scale) != args.scale:
            raise UserError(f"eval-sr: {args.model} holds an x{kwargs['scale']} model, not x{args.scale}")
        rows.append((Path(args.model).name, build_model(name, kwargs, args.model, frozen=True, device=device)))
    elif args.model is not None:
        if args.weights is None:
            raise UserError(f"eval-sr: --model {args.model} is a registry name; give its --weights FILE (or pass a "
                             "raykd checkpoint directory)")
        kwargs = {**json_object('--model-kwargs', args.model_kwargs), "scale": args.scale}
        rows.append((args.model, build_model(args.model, kwargs, args.weights, keymap=args.keymap, frozen=True,
                                             device=device)))
    # a benchmark folder is its own "train" split here too: the task needs one, evaluation reads only the val set
    tasks = [(folder.name, build_task(DataConfig(task="sr", dataset="paired", root=str(folder), val_root=str(folder),
                                                 scale=args.scale, patch_size=1, tile=args.tile,
                                                 tile_overlap=args.tile_overlap, y_channel=args.y_channel), 0))
             for folder in args.sets]
    print(f"x{args.scale}: PSNR (dB) / SSIM on Y (BT.601, {args.y_channel} luma; grey images on their channel), "
          f"{args.scale}-pixel border, {'whole images' if not args.tile else f'{args.tile}-pixel tiles'}")
    print("| model | " + " | ".join(name for name, _ in tasks) + " |")
    print("|---" * (len(tasks) + 1) + "|")
    for label, model in rows:
        cells = []
        for name, task in tasks:  # progress on stderr, so stdout stays the table to paste
            started = time.perf_counter()
            print(f"eval-sr: {label} on {name} ...", end="", file=sys.stderr, flush=True)
            cells.append(task.evaluate(model, device))
            print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        print(f"| {label} | " + " | ".join(f"{c['val_psnr']:.2f}/{c['val_ssim']:.4f}" for c in cells) + " |",
              flush=True)
    return 0


def export(args: argparse.Namespace) -> int:
    """``raykd export``: the student to ``--out``, and one line saying what it is and how to load it."""
    from raykd.models.student import export_student, with_unit

    meta = export_student(args.run_dir, args.out, args.trial)
    info = meta["export"]
    print(f"exported {meta['model']} ({meta['config']['method']['name']}, {info['stage']} trial {info['trial']}, "
          f"{info['metric']} {with_unit(info['value'], info['unit'])}) to {args.out}; load it with "
          f"raykd.load_student({str(args.out)!r})")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``raykd evaluate``: the classifier's val metrics, measured by :meth:`raykd.train.tasks.ClassificationTask.
    evaluate` (the evaluation every training epoch runs) on the val split of its recorded data config, beside what
    its checkpoint recorded. Only the val split is decoded: it stands in for the train split the task needs."""
    import dataclasses

    from raykd.config import from_json
    from raykd.data.arrays import load_split
    from raykd.data.store import cache_store
    from raykd.methods import method_class
    from raykd.models.checkpoint import read_meta
    from raykd.models.student import load_student
    from raykd.train.loop import resolve_device
    from raykd.train.tasks import build_task

    meta = read_meta(args.model_dir)
    if "config" not in meta:
        raise UserError(f"evaluate: {args.model_dir} records no training config (meta.json has no 'config'), so "
                        "its data is unknown; give a checkpoint written by raykd train/distill or a sweep")
    cfg = from_json(TrainConfig, meta["config"], "config")
    if cfg.data.task != "cls":
        raise UserError(f"evaluate: {args.model_dir} holds an SR model; measure it with raykd eval-sr --model "
                        f"{args.model_dir} --set BENCHMARK_DIR --scale {cfg.data.scale}")
    data = cfg.data if args.data_root is None else dataclasses.replace(cfg.data, root=args.data_root)
    val = load_split(data, "val", cache_store(args.cache_dir))
    task = build_task(data, cfg.seed, {"train": val, "val": val})
    device = resolve_device(args.device)
    input_key = cfg.method.student_input or method_class(cfg.method.name, data.task).student_input
    measured = task.evaluate(load_student(args.model_dir, device), device, input_key)
    print(f"{meta['model']} from {args.model_dir} on the val split of {data.dataset} ({len(val)} images, "
          f"{input_key.upper()} input):")
    for name in ("val_top1", "val_top5"):
        recorded = meta.get(name)
        said = "" if recorded is None else f"  (recorded at epoch {meta.get('epoch')}: {recorded:.2f}%)"
        print(f"{name} {measured[name]:.2f}%{said}")
    return 0


def _data_root(args: argparse.Namespace) -> str | None:
    """``--data-root``; the built-in digits are written under ``--cache-dir`` (as the sweeps do), never to the
    default cache when another is given."""
    if args.data_root is None and args.data == "demo":
        return str(CacheLayout.of(args.cache_dir).dataset("digits-32"))
    return args.data_root


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of ``raykd train`` / ``raykd distill`` flags."""
    method, teacher = MethodConfig(), None
    if args.command == "distill":
        method = MethodConfig(args.method, key_values("--param", args.param))
        model = ModelConfig(args.teacher_model, init_from=args.teacher, init_keymap=args.teacher_keymap) \
            if args.teacher_model is not None else None
        teacher = TeacherConfig(args.teacher, model)
    return TrainConfig(
        model=ModelConfig(args.model, init_from=args.init_from),
        data=DataConfig(dataset=args.data, root=_data_root(args), image_size=args.image_size),
        optim=OptimConfig(name=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                          steps_per_epoch=args.steps_per_epoch),
        method=method, teacher=teacher, runtime=RuntimeConfig(device=args.device, progress=True), seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command behind raykd's error edge (:func:`raykd.console.run_command`): a refused input (a bad value, a
    missing or damaged file) prints one line naming it and exits with 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: _run(build_parser().parse_args(argv)), argv)


def _run(args: argparse.Namespace) -> int:
    if args.command == "eval-sr":
        return eval_sr(args)
    if args.command == "export":
        return export(args)
    if args.command == "evaluate":
        return evaluate(args)
    if args.command == "compare":
        from raykd.tune.report import compare_runs

        print(compare_runs(*args.runs), end="")
        return 0
    if args.command == "monitor":
        from raykd.monitoring import monitor

        return monitor(args.ray_temp_dir, args.data_dir.expanduser(), args.port, args.scrape_interval)
    if args.command == "verify":
        return verify(args)
    if args.command == "sweep":
        from raykd.sweeps import run

        return run(args.name, args.flags)
    from raykd.data.store import cache_store
    from raykd.teachers.spec import TeacherSpec
    from raykd.train.checkpoint import find_checkpoint
    from raykd.train.loop import train
    from raykd.train.tasks import build_task

    cfg = train_config(args)
    if cfg.teacher is not None:
        TeacherSpec.from_config(cfg.teacher)  # a missing or unusable teacher stops here, before any data work
    out = Path(args.out)
    resume = find_checkpoint(out) if args.resume else None
    if args.resume and resume is None:
        raise UserError(f"--resume: no complete checkpoint at {out}")
    task = build_task(cfg.data, cfg.seed, store=cache_store(args.cache_dir))

    def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
        print(f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.4f}  top1 {metrics['val_top1']:.2f}  "
              f"top5 {metrics['val_top5']:.2f}  ({metrics['samples_per_s']:.0f} samples/s)", flush=True)

    final = train(cfg, task=task, report=report, checkpoint_dir=out, resume_from=resume)
    print(f"best top-1 {final['best_val_top1']:.2f}; checkpoint in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
