"""DFD (Zhu et al., "Low-resolution Visual Recognition via Deep Feature Distillation", ICASSP 2019) on CIFAR-10 or
SVHN, swept with Ray Tune + Optuna: one sweep, and one results table, per low-resolution input size.

    python sweeps/dfd_cifar.py --smoke                                   # the whole pipeline on the built-in digits
    python sweeps/dfd_cifar.py --data-root /data/cifar-10-batches-py     # LR 8x8 and 16x16 students
    python sweeps/dfd_cifar.py --data-root ... --lr-sizes 8               # one LR size only
    python sweeps/dfd_cifar.py --dataset svhn --download                  # SVHN (DFD's second dataset)

The teacher is the student's architecture (--model, default resnet20) trained on the 32 x 32 HR images, once, and
kept in the cache directory. The students see the LR image: the HR view downscaled to 8 x 8 or 16 x 16 (bicubic,
``data.lr_factor`` 4 or 2) and scaled back up to 32 x 32 (``lr_mode="down_up"``, DFD's input), under every
method (``MethodConfig(student_input="lr")`` in the base config): ``none`` is the LR-only baseline (the student
trained on LR images with cross-entropy alone), ``dfd`` adds the deep feature distillation loss to the HR
teacher's penultimate features (``lambda`` searched). Each LR size is its own sweep (<storage>/<name>_lr8/,
<storage>/<name>_lr16/: results, seeds stage, plots), so no LR student is ranked against another size's nor against
an HR student; <storage>/<name>/summary.md puts the tables side by side, with the HR teacher's accuracy as the
reference it is. The teacher's outputs for each epoch's views are computed once and shared by both sizes' sweeps.

Recipes (--recipe):

* ``budget`` (the default): resnet20, SGD 0.05 (momentum 0.9, weight decay 5e-4), cosine, 60 student and 120
  teacher epochs, batch 128: a scaled recipe.
* ``paper``: what DFD's paper states: 100 epochs (its experiments section, as quoted in issue #18; the HR
  teacher trained as long), on CIFAR-10 or SVHN (``--dataset``) at 32 px with LR students at 8 and 16 px, and its
  three networks, one per run (``--model``): AlexNet (``alexnet_cifar``), VGG-16 (``vgg16``, the CIFAR VGG-16 with
  BatchNorm; the default) and ResNet-18 (``resnet18_cifar``). The paper's optimiser, learning rate, schedule and
  batch were not available to raykd and the paper has no released code: those stay the budget recipe's, and the
  run says so before it starts and in summary.md (as it does for a network that is none of the paper's three).

CIFAR-10 is not downloaded automatically: get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html,
extract it and pass the cifar-10-batches-py directory (or the one holding it) with --data-root. SVHN's cropped digits
(train_32x32.mat, test_32x32.mat) are fetched and verified by --download (into <cache-dir>/datasets/svhn, or
--data-root/svhn), or read from --data-root.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykd.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig, is_uri
from raykd.console import UserError
from raykd.models.checkpoint import read_meta
from raykd.sweeps.recipes import announce
from raykd.teachers.spec import TeacherSpec
from raykd.tune.spec import Profile, SweepSpec
from raykd.tune.sweep import run_sweep

__all__ = ["DFDCifar", "find_cifar10", "find_svhn", "HR_SIZE", "PAPER_MODELS"]

HR_SIZE = 32
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
PAPER_MODELS = ("alexnet_cifar", "vgg16", "resnet18_cifar")  # DFD's AlexNet, VGG-16 and ResNet-18
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def find_cifar10(data_root: Path | None, cache_dir: str | Path) -> Path | None:
    """The cifar-10-batches-py directory (directly or one level down), else None after saying where it looked."""
    root = (data_root or Path(cache_dir) / "datasets" / "cifar-10-batches-py").expanduser().resolve()
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "batches.meta").is_file() and (candidate / "test_batch").is_file():
            return candidate
    print(f"CIFAR-10 not found at {root} (no batches.meta and test_batch there, nor under "
          f"{root / 'cifar-10-batches-py'}).\nDownload cifar-10-python.tar.gz from {CIFAR_URL}, extract it and point "
          "--data-root at the cifar-10-batches-py directory; or try the pipeline on built-in data with --smoke.",
          file=sys.stderr)
    return None


def find_svhn(data_root: Path | None, cache_dir: str | Path, download: bool) -> Path | None:
    """The directory holding SVHN's two .mat files (directly or in ``svhn/``), downloaded there first with
    ``download``; else None after saying where it looked."""
    root = (data_root or Path(cache_dir) / "datasets").expanduser().resolve()
    for candidate in (root, root / "svhn"):
        if all((candidate / name).is_file() for name in SVHN_FILES):
            return candidate
    if download:
        from raykd.data.svhn import download_svhn

        return download_svhn(root)
    print(f"SVHN not found at {root} (no {' and '.join(SVHN_FILES)} there, nor under {root / 'svhn'}).\n"
          "Get it with --download (train and test, about 240 MB from the SVHN site, verified), point --data-root at "
          "a directory holding the two files, or try the pipeline on built-in data with --smoke.", file=sys.stderr)
    return None


class DFDCifar(SweepSpec):
    name = "dfd_cifar"
    methods = ("none", "dfd")
    full = Profile(num_samples=16, epochs=60, teacher_epochs=120, batch_size=128)
    smoke = Profile(num_samples=3, epochs=2, teacher_epochs=3, batch_size=64)
    # the paper's 100 epochs; its batch was not available: the budget recipe's
    paper = Profile(num_samples=16, epochs=100, teacher_epochs=100, batch_size=128, recipe="paper")
    smoke_ignores = ("data_root", "download", "dataset")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", type=Path, default=None,
                       help="the cifar-10-batches-py directory, or one containing it (default: <cache-dir>/datasets/"
                            "cifar-10-batches-py); for SVHN the directory of its .mat files, or one holding svhn/")
        p.add_argument("--dataset", choices=("cifar10", "svhn"), default="cifar10",
                       help="the paper's two datasets (default cifar10)")
        p.add_argument("--download", action="store_true", 
                       help="download SVHN (about 240 MB) if it is not there (CIFAR-10: see below)")
        p.add_argument("--lr-sizes", type=int, nargs="+", default=[8, 16],
                       help="side of the students' LR images, one sweep each (default 8 16: lr_factor 4 and 2)")
        p.add_argument("--model", default=None,
                       help="teacher and student architecture, a registry/timm name (default resnet20; --recipe "
                            f"paper vgg16; the paper's three: {', '.join(PAPER_MODELS)}; smoke resnet8)")
        p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.05; smoke 0.1)")

    def check(self, args: argparse.Namespace) -> None:
        if args.download and args.dataset != "svhn":
            raise UserError("--download fetches SVHN only (give --dataset svhn): CIFAR-10's archive is fetched by hand "
                            f"from {CIFAR_URL}")
        announce(self.name, self.recipe_notes(args))

    def recipe_notes(self, args: argparse.Namespace) -> list[str]:
        """What a ``--recipe paper`` run lacks of the paper's setting (nothing for the budget recipe)."""
        if args.recipe != "paper":
            return []
        notes = ["the paper's optimiser, learning rate, schedule and batch are not known to raykd: SGD 0.05 "
                 "(momentum 0.9, weight decay 5e-4), cosine, batch 128 (the budget recipe's)"]
        model = self.student(args).name
        if model not in PAPER_MODELS:
            notes.append(f"network {model} is none of the paper's AlexNet, VGG-16 and ResNet-18 (--model "
                         f"{' / '.join(PAPER_MODELS)})")
        return notes

    def _sizes(self, args: argparse.Namespace) -> list[int]:
        bad = [s for s in args.lr_sizes if s < 1 or s >= HR_SIZE or HR_SIZE % s]
        if bad:
            raise UserError(f"--lr-sizes {bad}: each must divide {HR_SIZE} and be smaller (e.g. 8 or 16)")
        return list(dict.fromkeys(args.lr_sizes))

    def data(self, args: argparse.Namespace) -> DataConfig | None:
        factor = HR_SIZE // self._sizes(args)[0]
        if args.smoke:
            # the digits at CIFAR's 32 pixels, so that the LR sizes are CIFAR's too: minutes on two cores
            return DataConfig(dataset="demo", root=str(Path(args.cache_dir) / "datasets" / "digits-32"),
                              image_size=HR_SIZE, lr_factor=factor, lr_mode="down_up")
        root = find_svhn(args.data_root, args.cache_dir, args.download) if args.dataset == "svhn" else \
            find_cifar10(args.data_root, args.cache_dir)
        if root is None:
            return None
        return DataConfig(dataset=args.dataset, root=str(root), image_size=HR_SIZE, lr_factor=factor,
                          lr_mode="down_up")

    def student(self, args: argparse.Namespace) -> ModelConfig:
        default = "resnet8" if args.smoke else "vgg16" if args.recipe == "paper" else "resnet20"
        return ModelConfig(args.model or default)

    def teacher_model(self, args: argparse.Namespace) -> ModelConfig:
        return self.student(args)  # DFD distils between copies of one architecture

    def optim(self, args: argparse.Namespace, profile: Profile) -> OptimConfig:
        # the CIFAR KD recipe (CRD, mdistiller): SGD, momentum 0.9, weight decay 5e-4
        lr = (0.1 if args.smoke else 0.05) if args.lr is None else args.lr  # a given 0 is refused, not replaced
        return OptimConfig(name="sgd", lr=lr, epochs=profile.epochs, batch_size=profile.batch_size)

    def base(self, args: argparse.Namespace, data: DataConfig, profile: Profile) -> TrainConfig:
        # every method trains the LR student: "none" is the LR-only baseline
        return dataclasses.replace(super().base(args, data, profile), method=MethodConfig(student_input="lr"))

    def teacher_config(self, args: argparse.Namespace, base: TrainConfig, profile: Profile) -> TrainConfig:
        """The HR teacher: the students' data without any LR input (so one teacher serves every LR size), no
        method, its own epochs."""
        return dataclasses.replace(base, model=self.teacher_model(args), method=MethodConfig(),
                                   data=dataclasses.replace(base.data, lr_factor=1),
                                   optim=dataclasses.replace(base.optim, epochs=profile.teacher_epochs))

    def run(self, args: argparse.Namespace, base: TrainConfig, teachers: TeacherSpec | Mapping[str, TeacherSpec],
            sweep: SweepConfig, splits: Mapping[str, Any]) -> dict[str, Any]:
        """One sweep per LR size (``<name>_lr<size>``), then the side-by-side summary in ``<name>/``."""
        summaries = {}
        for size in self._sizes(args):
            sized = dataclasses.replace(base, data=dataclasses.replace(base.data, lr_factor=HR_SIZE // size))
            sub = dataclasses.replace(sweep, name=f"{sweep.name}_lr{size}")
            print(f"\nDFD: LR {size}x{size} students (x{HR_SIZE // size} down, bicubic back up to {HR_SIZE}) -> "
                  f"{sub.directory}", flush=True)
            summaries[size] = (sub, run_sweep(sized, teachers, sub, splits=splits))
        return write_summary(sweep, summaries, teachers, base)


def _teacher_accuracy(teachers: TeacherSpec | Mapping[str, TeacherSpec]) -> str:
    spec = teachers if isinstance(teachers, TeacherSpec) else next(iter(teachers.values()), None)
    if spec is None or spec.checkpoint is None or not Path(spec.checkpoint).is_dir():
        return "-"
    meta = read_meta(spec.checkpoint)
    value = meta.get("val_top1", meta.get("best_val_top1"))
    return "-" if value is None else f"{value:.2f}"


def write_summary(sweep: SweepConfig, summaries: Mapping[int, tuple[SweepConfig, dict[str, Any]]],
                  teachers: TeacherSpec | Mapping[str, TeacherSpec], base: TrainConfig) -> dict[str, Any]:
    """``<sweep.directory>/summary.md`` (one section, one table, per LR size) and ``summary.json``."""
    lines = [f"# DFD: low-resolution students, one table per LR size ({base.data.dataset}, {HR_SIZE} px HR)", "",
             f"HR teacher ({base.model.name} on {HR_SIZE}x{HR_SIZE} images): val_top1 {_teacher_accuracy(teachers)} "
             "(the reference; no HR student is ranked with the LR students)."]
    for size, (sub, _) in summaries.items():
        table = Path(sub.directory) / "summary.md" if not is_uri(sub.directory) else None
        body = table.read_text().split("\n", 1)[1].strip() if table is not None and table.exists() else \
            "(no finished trial)"
        lines += ["", f"## LR {size}x{size} (x{HR_SIZE // size} down, bicubic back up to {HR_SIZE}; results: "
                      f"{sub.directory})", "", body]
    combined = {"lr_sizes": {str(size): {"directory": sub.directory, **summary}
                             for size, (sub, summary) in summaries.items()}}
    if not is_uri(sweep.directory):
        out = Path(sweep.directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        (out / "summary.json").write_text(json.dumps(combined, indent=2, default=str))
    return combined
