"""MTKD (Jiang et al., ECCV 2024) on DIV2K: three SR teachers, the knowledge aggregator, then a student sweep.

    python sweeps/mtkd_div2k.py --smoke                                    # the whole pipeline on built-in data
    python sweeps/mtkd_div2k.py --download --val-root benchmark/Set5 --set14-root benchmark/Set14
    python sweeps/mtkd_div2k.py --data-root /data/DIV2K --val-root benchmark/Set5 --student rcan_light
    python sweeps/mtkd_div2k.py --recipe paper --data-root /data/DIV2K --flickr2k-root /data/Flickr2K ...  # DF2K
    python sweeps/mtkd_div2k.py --address auto --gpus-per-worker 1 ...     # on a cluster (ray up cluster.yaml)

Every stage trains on DIV2K's 800 training images, or, with --flickr2k-root, on DF2K (those and Flickr2K's 2,650,
linked under <cache-dir>/datasets/DF2K; --train-set div2k|df2k says it outright).

1. Teachers: SwinIR, RCAN and EDSR (the full models) are trained on that set once (48-pixel LR patches, their
   papers' setting) and kept in the cache directory's trained-teacher store, unless --teacher-checkpoints brings
   them (below).
2. Stage 1 (MTKD Sec. 3.1, :mod:`raykd.train.mtkd`): the teacher service computes each teacher's whole-image
   outputs once (or reads them back from the store), the knowledge aggregator is trained on aligned (teacher
   patches, HR patch) views with L1 to the ground truth (Adam 0.9/0.999; --stage1-lr, default the paper's 1e-4,
   the released config's 2e-4 on request; halved after 40% and 80% of --stage1-epochs, the released schedule
   scaled to epochs; LR patches of 64, 256 HR pixels at x4), and the aggregated teacher (teachers + aggregator, one
   checkpoint) is stored, keyed by everything that made it, so a second run reuses it. Its held-out PSNR is printed
   against each teacher's and added to summary.md.
3. Stage 2 (Sec. 3.2): a sweep of the student (EDSR-baseline; RCAN-light or SwinIR-light with --student; LR
   patches of 64) over ``none`` (alone), ``l1kd``, ``fakd`` and ``at`` (distilled from the best single teacher by
   held-out PSNR; FAKD, He et al. ICIP 2020: its SR image and the spatial affinities of three body features,
   :class:`raykd.methods.sr.FAKD`; attention transfer on the same features, :class:`raykd.methods.sr.SRAttention`)
   and ``mtkd`` (from the aggregated teacher: ``alpha``, the DWT levels ``K`` and the wavelet searched by Optuna).
   The teacher service serves them; the best single teacher's table is the one stage 1 stored. ``fakd`` and ``at``
   share that teacher under its own name (``<name>-features``), so that its features are computed once for both
   and, served live where whole-image tables of them would exceed the service's ``live_threshold_bytes``
   (DIV2K's do), never change how ``l1kd`` is served. Trials are
   validated on --val-root (Set5 in the benchmark layout HR/ + LR_bicubic/X{s}/; DIV2K's 100 valid images without
   it); with --set14-root every trial's final student is measured on Set14 too. Results go to <storage>/<name>/.

Released teachers: --teacher-checkpoints swinir=FILE rcan=FILE edsr=FILE takes raykd checkpoint directories or the
files released with the reference code. A released file is loaded strictly with
:func:`raykd.models.weights.load_weights` into the registry model of that name (BasicSR/KAIR ``params_ema`` /
``params`` wrappers are unwrapped) and stored once as a raykd checkpoint in the trained-teacher store, keyed by the
file's sha256 and the model's kwargs. The x4 files:

* SwinIR: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth`` (github.com/JingyunLiang/SwinIR, releases v0.0),
  trained on 48-pixel patches: add --teacher-kwargs swinir='{"img_size": 48}' (the DF2K ``s64w8`` file needs none);
* RCAN: ``RCAN_BIX4.pt`` (github.com/yulunzhang/RCAN, RCAN_TestCode/model);
* EDSR: ``edsr_x4-4f62e9ef.pt`` (github.com/sanghyun-son/EDSR-PyTorch).

``raykd eval-sr --model <stored dir> --set benchmark/Set5 --scale 4`` should then print the paper's Set5 figure
(SwinIR 32.72, RCAN 32.63, EDSR 32.46 dB at x4).

Recipes (--recipe):

* ``budget`` (the default): stage 1 as above (100 epochs, halved after 40% and 80%); stage 2 Adam 2e-4, cosine,
  100 epochs of 16 patches per image at batch 16 (about 80k iterations); teachers trained by raykd (300 epochs)
  unless given: a scaled recipe.
* ``paper``: MTKD's Sec. 4.1 (as quoted in issue #18): stage 2 at learning rate 1e-4 (:data:`PAPER_LR`), divided
  by 10 every 100k iterations, 250k iterations; stage 1 at 1e-4 divided by 10 (the paper's factor) at the
  released config's 200k and 400k of its 500k iterations (the paper names no stage-1 milestones). raykd steps
  schedules per epoch, so an epoch is exactly 1,000 iterations at batch 16: 20 patches of each of DIV2K's 800
  images, or on DF2K (3,450 images, where no whole number of patches makes whole epochs) 5 patches of each, the
  epoch capped at 1,000 iterations (:meth:`DIV2KSweep.paper_layout`): stage 2 runs 250 epochs (x0.1 after 100 and
  200), stage 1 500 (x0.1 after 200 and 400). Batch 16 is the released stage-1 config's, used for stage 2 as well
  (not confirmed against the paper's text). The paper trains on DF2K: give --flickr2k-root; without it the run
  trains on DIV2K and says so loudly. The paper distils from the released SwinIR, RCAN and EDSR: give them with
  --teacher-checkpoints; a teacher not given is trained by raykd, and the run says so loudly (before it starts and
  in summary.md), as it says that its baselines are ``l1kd`` (the tables' KD), ``fakd`` and ``at`` only (the
  paper's tables also compare DUKD and CrossKD).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig, TrainConfig, is_uri
from raykd.console import UserError, json_object
from raykd.data.store import file_sha256
from raykd.models import check_model_name
from raykd.sweeps.div2k import DIV2KSweep
from raykd.sweeps.recipes import DIV2K_TRAIN_IMAGES, announce, iteration_epochs, iteration_optim
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.trained import TrainedTeachers
from raykd.train.mtkd import OFFICIAL_LR, PAPER_LR, Stage1Result, prepare_mtkd_teacher, stage1_config
from raykd.tune.spec import Profile
from raykd.tune.teachers import fit_to_a_node, prepare_teacher

__all__ = ["MTKDDiv2K", "released_teacher", "feature_teacher", "TEACHERS", "STUDENTS"]

TEACHERS = ("swinir", "rcan", "edsr")
STUDENTS = ("edsr_baseline", "rcan_light", "swinir_light")
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
# --smoke's aggregator learns a correction to the teachers' mean (raykd's mean_residual option): from a few dozen
# steps the paper's network has not yet learnt to reproduce an image at all
SMOKE_AGGREGATOR = {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "mean_residual": True}


def _named(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"{what} expects NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def released_teacher(name: str, path: Path, kwargs: Mapping[str, Any], scale: int, cache_dir: str) -> TeacherSpec:
    """A released weights file as a raykd checkpoint in the trained-teacher store: built and loaded strictly into
    the registry model ``name`` once (:func:`raykd.models.build.build_model`; BasicSR/KAIR wrappers unwrapped
    by :func:`raykd.models.weights.load_weights`), keyed by the file's content and the model's kwargs, and reused
    afterwards."""
    from raykd.models.build import build_model
    from raykd.train.checkpoint import save_checkpoint

    model_kwargs = {**kwargs, "scale": scale}
    store = TrainedTeachers(cache_dir)
    target = store.path(f"{name}-released", {"released": name, "model_kwargs": model_kwargs,
                                             "weights_sha256": file_sha256(path)})
    found = store.find(target, name)
    if found is not None:
        print(f"reusing released teacher {name}: {target}")
        return found
    model = build_model(name, model_kwargs, path)
    with tempfile.TemporaryDirectory(prefix="raykd-released-") as tmp:
        saved = save_checkpoint(Path(tmp) / "checkpoint", model=model,
                                meta={"model": name, "model_kwargs": model_kwargs, "source": str(path)})
        files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    print(f"converted released {name} weights {path} -> {target}")
    return store.commit(files, target, name)


class MTKDDiv2K(DIV2KSweep):
    name = "mtkd_div2k"
    methods = ("none", "l1kd", "fakd", "at", "mtkd")
    full = Profile(num_samples=24, epochs=100, teacher_epochs=300, batch_size=16)
    smoke = Profile(num_samples=6, epochs=2, teacher_epochs=3, batch_size=8)
    patch = (64, 12)  # the students' LR patch (stage 2); the teachers train on TEACHER_PATCH
    TEACHER_PATCH = (48, 12)  # EDSR, RCAN and SwinIR's own training patches
    STAGE1 = {"epochs": (100, 10), "patch_size": (64, 16), "patches_per_image": (16, 16), "batch_size": (16, 8)}
    # --recipe paper (Sec. 4.1): stage 2 250k iterations, x0.1 every 100k; stage 1 x0.1 at the released config's
    # 200k and 400k of 500k; batch 16 and 20 patches per DIV2K image: 1,000 iterations an epoch (paper_layout)
    PAPER_PATCHES, PAPER_BATCH = 20, 16
    PAPER_STAGE2 = (250_000, (100_000, 200_000))
    PAPER_STAGE1 = (500_000, (200_000, 400_000))
    paper = Profile(num_samples=24, epochs=iteration_epochs(PAPER_STAGE2[0], PAPER_BATCH, DIV2K_TRAIN_IMAGES,
                                                            PAPER_PATCHES),
                    teacher_epochs=300, batch_size=PAPER_BATCH, recipe="paper")  # teachers: released in the paper

    def __init__(self) -> None:
        self.stage1: Stage1Result | None = None

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        p.add_argument("--teachers", nargs="+", default=list(TEACHERS),
                       help=f"teacher models (default {' '.join(TEACHERS)})")
        p.add_argument("--teacher-checkpoints", nargs="+", default=[], metavar="NAME=PATH",
                       help="a teacher's raykd checkpoint directory or released weights file (skips its training)")
        p.add_argument("--teacher-kwargs", nargs="+", default=[], metavar="NAME=JSON",
                       help="model kwargs of a teacher, e.g. swinir='{\"img_size\": 48}'")
        p.add_argument("--student", choices=STUDENTS, default="edsr_baseline",
                       help="the student (default edsr_baseline)")
        p.add_argument("--stage1-epochs", type=int, default=None,
                       help=f"aggregator epochs (default {self.STAGE1['epochs'][0]}; smoke {self.STAGE1['epochs'][1]})")
        p.add_argument("--stage1-lr", type=float, default=None,
                       help=f"aggregator learning rate (default the paper's {PAPER_LR:g}; the released config's is "
                            f"{OFFICIAL_LR:g}; smoke 2e-3)")
        p.add_argument("--stage1-schedule", choices=("step", "cosine", "constant"), default="step",
                       help="step (default): halved after 40%% and 80%% of the epochs, the released schedule")
        p.add_argument("--stage1-batch-size", type=int, default=None, help="aggregator batch (default 16; smoke 8)")
        p.add_argument("--stage1-patch-size", type=int, default=None,
                       help="aggregator LR patch side (default 64, the paper's; smoke 16)")
        p.add_argument("--aggregator-kwargs", default=None, metavar="JSON",
                       help="overrides of the aggregator's paper configuration (raykd.models.aggregator)")

    def recipe_notes(self, args: argparse.Namespace) -> list[str]:
        """What a ``--recipe paper`` run lacks of the paper's setting (nothing for the budget recipe)."""
        if args.recipe != "paper":
            return []
        given = {name for name, _ in (item.partition("=")[::2] for item in args.teacher_checkpoints)}
        trained = [t for t in args.teachers if t not in given]
        notes = self.data_notes(args)
        notes += [f"teachers {', '.join(trained)} are trained by raykd; the paper distils from the released ones "
                  "(--teacher-checkpoints NAME=FILE)"] if trained else []
        return notes + ["the baselines are l1kd (the tables' KD), fakd and at only: the paper's tables also "
                        "compare DUKD and CrossKD",
                        "batch 16 (the released stage-1 config's) is not confirmed against the paper's text"]

    def optim(self, args: argparse.Namespace, profile: Profile) -> OptimConfig:
        if profile.recipe != "paper":
            return super().optim(args, profile)
        iterations, milestones = self.PAPER_STAGE2
        patches, steps = self.paper_layout(profile.batch_size)  # DIV2K's or DF2K's images (self.data)
        optim = iteration_optim(_given(args.lr, PAPER_LR), iterations, milestones, 0.1, profile.batch_size,
                                patches, images=self.train_images, steps_per_epoch=steps)
        return dataclasses.replace(optim, epochs=profile.epochs)  # --epochs, where given, wins

    def student(self, args: argparse.Namespace) -> ModelConfig:
        return ModelConfig(args.student, SMOKE_STUDENTS[args.student] if args.smoke else {})

    def teacher_model(self, args: argparse.Namespace) -> ModelConfig:
        raise NotImplementedError("MTKD has several teachers: see teachers()")

    def _teacher_config(self, args: argparse.Namespace, base: TrainConfig, profile: Profile, name: str,
                        kwargs: Mapping[str, Any]) -> TrainConfig:
        patch = self.TEACHER_PATCH[1 if args.smoke else 0]
        return dataclasses.replace(base, model=ModelConfig(name, dict(kwargs)),
                                   data=dataclasses.replace(base.data, patch_size=patch),
                                   optim=dataclasses.replace(base.optim, epochs=profile.teacher_epochs))

    def check(self, args: argparse.Namespace) -> None:
        super().check(args)
        self._teacher_flags(args)
        _aggregator_kwargs(args)
        for name in args.teachers:
            check_model_name(name)
        announce(self.name, self.recipe_notes(args))

    @staticmethod
    def _teacher_flags(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
        """``--teacher-checkpoints`` (each one existing) and ``--teacher-kwargs`` (JSON objects), by teacher name,
        each name among ``--teachers``."""
        if args.teacher is not None:
            raise UserError("mtkd_div2k has three teachers: give them with --teacher-checkpoints NAME=PATH")
        checkpoints = {n: Path(p).expanduser().resolve()
                       for n, p in _named(args.teacher_checkpoints, "--teacher-checkpoints").items()}
        kwargs = {n: json_object(f"--teacher-kwargs {n}", v)
                  for n, v in _named(args.teacher_kwargs, "--teacher-kwargs").items()}
        unknown = sorted((set(checkpoints) | set(kwargs)) - set(args.teachers))
        if unknown:
            raise UserError(f"--teacher-checkpoints/--teacher-kwargs name {unknown}, which are not among --teachers "
                            f"{args.teachers}")
        missing = [f"{n}={p}" for n, p in checkpoints.items() if not p.exists()]
        if missing:
            raise UserError(f"--teacher-checkpoints {' '.join(missing)}: no such file or directory")
        return checkpoints, kwargs

    def teachers(self, args: argparse.Namespace, base: TrainConfig, profile: Profile, splits: Mapping[str, Any]
                 ) -> dict[str, TeacherSpec]:
        checkpoints, kwargs = self._teacher_flags(args)
        if args.smoke:
            kwargs = {t: {**SMOKE_TEACHERS.get(t, {}), **kwargs.get(t, {})} for t in args.teachers}
        gpus = min(args.gpus_per_worker, 1)
        specs = []
        for name in args.teachers:
            path = checkpoints.get(name)
            if path is not None and path.is_file():
                specs.append(released_teacher(name, path, kwargs.get(name, {}), base.data.scale, args.cache_dir))
                continue
            cfg = self._teacher_config(args, base, profile, name, kwargs.get(name, {}))
            specs.append(prepare_teacher(path, cfg, splits, cache_dir=args.cache_dir, gpus=gpus, name=name))

        stage1 = self.stage1_config(args, base)
        # all N teachers' actors at once: each with a share of the cluster's CPUs (and of one GPU)
        cpus = ray.cluster_resources().get("CPU", 1.0)
        service = TeacherServiceConfig(num_cpus=min(1.0, cpus / len(specs)), num_gpus=gpus / len(specs),
                                       mode="stored")
        result = prepare_mtkd_teacher(specs, stage1, splits, cache_dir=args.cache_dir, service=service,
                                      resources=fit_to_a_node(gpus),  # sized as a teacher's training
                                      sweep_name=args.name or self.name + ("_smoke" if args.smoke else "_paper"
                                                                           if args.recipe == "paper" else ""))
        self.stage1 = result
        print(f"\nMTKD stage 1, held-out ({base.data.val_root or base.data.dataset + ' val'}):\n{result.table()}\n",
              flush=True)
        best = next(s for s in specs if s.name == result.best_teacher)
        # fakd's and at's teacher under its own name: the service decides stored or live per teacher, from all the
        # outputs asked of it, and l1kd's image table must stay the one stage 1 stored whether or not they run
        features = dataclasses.replace(best, name=feature_teacher(best.name))
        per_method = {"l1kd": best, "fakd": features, "at": features, "mtkd": result.spec}
        return {m: s for m, s in per_method.items() if m in args.methods}

    def stage1_config(self, args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
        """Stage 1's config: the flags, else the smoke, paper or budget values (the paper's: x0.1 at the released
        200k and 400k of 500k iterations, in epochs of 1,000 iterations: :meth:`paper_layout`)."""
        i = 1 if args.smoke else 0
        paper = args.recipe == "paper"
        batch = _given(args.stage1_batch_size, self.PAPER_BATCH if paper else self.STAGE1["batch_size"][i])
        patches, steps = self.paper_layout(batch) if paper else (self.STAGE1["patches_per_image"][i], None)
        lr = _given(args.stage1_lr, 2e-3 if args.smoke else PAPER_LR)
        stage1 = stage1_config(
            base.data, epochs=_given(args.stage1_epochs, self.STAGE1["epochs"][i]), lr=lr,
            schedule=args.stage1_schedule, batch_size=batch,
            patch_size=_given(args.stage1_patch_size, self.STAGE1["patch_size"][i]), patches_per_image=patches,
            aggregator_kwargs=_aggregator_kwargs(args), seed=args.seed)
        if not paper:
            return stage1
        iterations, milestones = self.PAPER_STAGE1
        optim = iteration_optim(lr, iterations, milestones, 0.1, batch, patches, images=self.train_images,
                                steps_per_epoch=steps)
        return dataclasses.replace(stage1, optim=dataclasses.replace(
            optim, epochs=_given(args.stage1_epochs, optim.epochs)))

    def after(self, args: argparse.Namespace, sweep: SweepConfig, base: TrainConfig) -> None:
        super().after(args, sweep, base)
        summary = Path(sweep.directory) / "summary.md"
        if self.stage1 is not None and not is_uri(sweep.directory) and summary.exists():
            result = self.stage1
            held = base.data.val_root or f"{base.data.dataset} val"
            summary.write_text(summary.read_text() + f"\n## MTKD stage 1: teachers and aggregator, held-out "
                               f"({held})\n\n{result.table()}\n\nl1kd distils from {result.best_teacher}; fakd and at "
                               f"from {feature_teacher(result.best_teacher)} (the same weights); mtkd from {result.spec.name} "
                               f"({result.spec.checkpoint}).\n")


def feature_teacher(name: str) -> str:
    """The name ``fakd``'s and ``at``'s teacher is served under: the best single teacher ``name``'s, marked."""
    return f"{name}-features"


def _aggregator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--aggregator-kwargs`` (a JSON object), else the smoke or the paper configuration."""
    if args.aggregator_kwargs is not None:
        return json_object("--aggregator-kwargs", args.aggregator_kwargs)
    return dict(SMOKE_AGGREGATOR) if args.smoke else {}


def _given(value: Any, default: Any) -> Any:
    """A flag's value when given (a given 0 is checked, and refused, by the config: never replaced), else the
    default."""
    return default if value is None else value
