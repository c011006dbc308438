"""What the DIV2K super-resolution sweeps (DVMSR, MTKD) share: their data flags, finding DIV2K, the SR optimiser,
and measuring every trial's final student on extra test sets (Set14) after the sweep.

Flags (:meth:`DIV2KSweep.add_arguments`): ``--data-root``/``--download`` (DIV2K's bicubic track),
``--flickr2k-root``/``--train-set`` (what trials train on: ``div2k``, DIV2K's 800 training images, or ``df2k``,
those and Flickr2K's 2,650, the DVMSR/MTKD papers' DF2K; ``df2k`` whenever ``--flickr2k-root`` is given), ``--val-root``
(the set trials are validated on, e.g. Set5, in the benchmark layout ``HR/`` + ``LR_bicubic/X{s}/``; DIV2K's 100
valid images without it), ``--set14-root`` (measured after the sweep), ``--scale``, ``--patch-size``, ``--lr``,
and the SR evaluation's conventions: ``--y-channel`` (``matlab``: luma rounded as MATLAB's ``rgb2ycbcr``, the EDSR /
RCAN / SwinIR tables, the default; ``float``: unrounded, BasicSR's ``calculate_psnr``) and ``--tile`` (LR tiles of
that side for whole-image inference; 0, the default, super-resolves every image whole, which is exact).

DF2K (:func:`find_df2k`) is a root of links (:func:`raykd.data.df2k.assemble_df2k`) at
``<cache-dir>/datasets/DF2K``, assembled from the DIV2K root found as without it and the ``--flickr2k-root`` given,
and reused while it links the same sources' images; it is read as dataset ``"paired"`` (``"hr_folder"``, MATLAB's
bicubic, where Flickr2K has no bicubic LR at the scale). Validation stays ``--val-root`` or DIV2K's valid split.
An epoch is then ``patches_per_image`` views of each of DF2K's images: the budget recipe's epochs are 4.3 times
DIV2K's; ``--recipe paper`` keeps its epochs at the iterations the paper counts (:meth:`DIV2KSweep.paper_layout`).

With ``--set14-root`` every trial's final student (search and seeds stages) is measured on that set after the sweep
(:func:`add_test_sets`: one Ray task per trial, on a GPU when trials had one), and its PSNR/SSIM (the same Y
convention, ``scale`` pixels of border) join ``results.parquet`` and ``summary.md`` (v1's ``add_test_sets``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from raykd.config import CacheLayout, DataConfig, OptimConfig, SweepConfig, TrainConfig, is_uri
from raykd.console import UserError
from raykd.sweeps.recipes import DIV2K_TRAIN_IMAGES, epoch_layout
from raykd.tune.spec import Profile, SweepSpec

__all__ = ["DIV2KSweep", "find_div2k", "find_flickr2k", "find_df2k", "train_set", "benchmark_missing",
           "add_test_sets", "evaluate_checkpoint"]

TRAIN_SETS = ("div2k", "df2k")


def find_div2k(data_root: Path | None, cache_dir: str | Path, scale: int, download: bool) -> Path | None:
    """The DIV2K root holding the x``scale`` training pairs (downloaded first when ``download``), directly or one
    level down (``<root>/DIV2K``); else ``None`` after telling the user where it looked and how to get it."""
    # absolute: Tune runs each trial in its own working directory
    root = (data_root or CacheLayout.of(cache_dir).dataset("DIV2K")).expanduser().resolve()
    lr = f"DIV2K_train_LR_bicubic/X{scale}"
    for candidate in (root, root / "DIV2K"):
        if (candidate / "DIV2K_train_HR").is_dir() and (candidate / lr).is_dir():
            return candidate
    if download:
        from raykd.data.sr import download_div2k

        return download_div2k(root, scale).resolve()
    print(f"DIV2K not found at {root} (no DIV2K_train_HR/ and {lr}/ there, nor under {root / 'DIV2K'}).\n"
          f"Get it with --download (train + valid, HR and bicubic X{scale}, about 4.3 GB at x4, into {root}), "
          "point --data-root at a directory holding the official DIV2K folders "
          "(https://data.vision.ee.ethz.ch/cvl/DIV2K/), or try the pipeline on built-in data with --smoke.",
          file=sys.stderr)
    return None


def find_flickr2k(flickr2k_root: Path) -> Path:
    """The directory holding Flickr2K's ``Flickr2K_HR/`` (as ``Flickr2K.tar`` extracts): ``--flickr2k-root`` or
    its ``Flickr2K`` folder; a UserError naming the flag otherwise."""
    from raykd.data.df2k import source_root

    try:
        return source_root("Flickr2K", flickr2k_root)
    except UserError:
        root = flickr2k_root.expanduser().resolve()
        raise UserError(f"--flickr2k-root {flickr2k_root}: no Flickr2K_HR/ there nor under {root / 'Flickr2K'}; "
                        "give the folder Flickr2K.tar extracts to (Flickr2K_HR/ and Flickr2K_LR_bicubic/X{s}/)"
                        ) from None


def train_set(args: argparse.Namespace) -> str:
    """What the run trains on: ``--train-set``, else ``df2k`` when ``--flickr2k-root`` is given, else ``div2k``."""
    return args.train_set or ("df2k" if args.flickr2k_root is not None else "div2k")


def find_df2k(div2k: Path, flickr2k_root: Path, cache_dir: str | Path, scale: int) -> tuple[Path, dict[str, Any]]:
    """DF2K's root under the cache (``<cache-dir>/datasets/DF2K``) and its manifest (sources, image counts, the
    LR scales linked): the root assembled there before where it still links ``div2k`` (the DIV2K root
    :func:`find_div2k` found) and ``flickr2k_root``'s images, else assembled now with the x``scale`` LR links and
    those it had (:func:`raykd.data.df2k.df2k_root`, under a lock)."""
    from raykd.data.df2k import df2k_root

    sources = {"DIV2K": div2k.resolve(), "Flickr2K": find_flickr2k(flickr2k_root)}
    dest = CacheLayout.of(cache_dir).dataset("DF2K")
    manifest, assembled = df2k_root(dest, sources["DIV2K"], sources["Flickr2K"], scale)
    if assembled:
        counts = " + ".join(f"{n} {name}" for name, n in manifest["images"].items())
        print(f"DF2K assembled at {dest}: links to {counts} HR images", file=sys.stderr, flush=True)
    return dest, manifest


def benchmark_missing(folders: Mapping[str, Path | None], scale: int) -> list[str]:
    """``"--flag PATH"`` of every given folder that is not a benchmark set at ``scale`` (``HR/`` and
    ``LR_bicubic/X{scale}/``)."""
    return [f"{flag} {path}" for flag, path in folders.items() if path is not None and not (
        (Path(path).expanduser() / "HR").is_dir() and (Path(path).expanduser() / "LR_bicubic" / f"X{scale}").is_dir())]


class DIV2KSweep(SweepSpec):
    """A DIV2K SR sweep: subclasses set ``name``, ``methods``, the profiles, ``patch`` (LR patch side: full,
    smoke), and the models."""

    task = "sr"
    smoke_ignores = ("data_root", "download", "train_set", "flickr2k_root")
    patch: ClassVar[tuple[int, int]] = (64, 16)
    patches_per_image: ClassVar[tuple[int, int]] = (16, 4)
    learning_rate: ClassVar[tuple[float, float]] = (2e-4, 2e-3)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", type=Path, default=None,
                       help="the DIV2K directory holding DIV2K_train_HR/ and DIV2K_train_LR_bicubic/X{s}/ "
                            "(default: <cache-dir>/datasets/DIV2K)")
        p.add_argument("--download", action="store_true",
                       help="download DIV2K's train and valid HR + bicubic LR archives (about 4.3 GB at x4) if absent")
        p.add_argument("--flickr2k-root", type=Path, default=None,
                       help="the Flickr2K directory holding Flickr2K_HR/ (and Flickr2K_LR_bicubic/X{s}/): train on "
                            "DF2K, DIV2K's 800 training images and Flickr2K's 2,650 (the DVMSR/MTKD papers' data)")
        p.add_argument("--train-set", choices=TRAIN_SETS, default=None,
                       help="div2k: DIV2K's training images; df2k: DF2K, linked under <cache-dir>/datasets/DF2K from "
                            "--data-root's DIV2K and --flickr2k-root (default: df2k when --flickr2k-root is given)")
        p.add_argument("--val-root", type=Path, default=None,
                       help="validation set in the benchmark layout (HR/ + LR_bicubic/X{s}/), e.g. Set5 (default: "
                            "DIV2K valid; smoke: the demo's val images)")
        p.add_argument("--set14-root", type=Path, default=None,
                       help="Set14 in the benchmark layout: every trial's final student is also measured on it, and "
                            "the numbers join results.parquet and summary.md")
        p.add_argument("--scale", type=int, default=4, help="upscaling factor (2, 3 or 4; default 4)")
        p.add_argument("--patch-size", type=int, default=None,
                       help=f"LR training patch side of the students (default {self.patch[0]}; smoke {self.patch[1]})")
        p.add_argument("--lr", type=float, default=None,
                       help=f"Adam learning rate (default {self.learning_rate[0]:g}; smoke {self.learning_rate[1]:g})")
        p.add_argument("--y-channel", choices=("matlab", "float"), default="matlab",
                       help="PSNR/SSIM luma: MATLAB-rounded (the EDSR/RCAN/SwinIR tables; default) or float "
                            "(BasicSR's calculate_psnr)")
        p.add_argument("--tile", type=int, default=0,
                       help="LR tile side for whole-image inference (evaluation, teacher outputs); 0: whole images "
                            "(default; exact)")
        p.add_argument("--tile-overlap", type=int, default=16, help="overlap of --tile tiles (default 16)")

    # --recipe paper (a subclass says): LR patches per DIV2K image and epoch at the paper's batch, so that an epoch
    # is a round number of iterations (paper_layout keeps that number for DF2K and other batches)
    PAPER_PATCHES: int | None = None
    PAPER_BATCH: int | None = None
    train_images: int = DIV2K_TRAIN_IMAGES  # what the run trains on: DIV2K's 800, or DF2K's count (set by data())

    def check(self, args: argparse.Namespace) -> None:
        """Refuse ``--train-set``/``--flickr2k-root`` that do not fit together (before any data is looked for)."""
        if args.train_set == "df2k" and args.flickr2k_root is None:
            raise UserError("--train-set df2k needs --flickr2k-root: the folder holding Flickr2K_HR/ (DF2K is "
                            "DIV2K's training images and Flickr2K's)")
        if args.train_set == "div2k" and args.flickr2k_root is not None:
            raise UserError(f"--flickr2k-root {args.flickr2k_root} with --train-set div2k would not be read: drop "
                            "one of them (--flickr2k-root alone trains on DF2K)")
        if args.flickr2k_root is not None:
            find_flickr2k(args.flickr2k_root)

    def data_notes(self, args: argparse.Namespace) -> list[str]:
        """What a ``--recipe paper`` run's data lacks of the papers' DF2K (nothing when it trains on DF2K)."""
        if train_set(args) == "df2k":
            return []
        return [f"trained on DIV2K only ({DIV2K_TRAIN_IMAGES} images), not the paper's DF2K (DIV2K + Flickr2K, "
                "3,450 images): give --flickr2k-root (the folder holding Flickr2K_HR/) to train on DF2K"]

    def paper_layout(self, batch_size: int) -> tuple[int, int | None]:
        """``(patches_per_image, steps_per_epoch)`` of ``--recipe paper``'s epochs over :attr:`train_images` at
        ``batch_size``: the iterations an epoch of :attr:`PAPER_PATCHES` views of DIV2K's images makes at
        :attr:`PAPER_BATCH` (:func:`raykd.sweeps.recipes.epoch_layout`: DIV2K's 160 views at 128 for DVMSR; DF2K's
        3,450 images 38 views, capped at 1,000 iterations)."""
        assert self.PAPER_PATCHES is not None and self.PAPER_BATCH is not None
        steps = DIV2K_TRAIN_IMAGES * self.PAPER_PATCHES // self.PAPER_BATCH
        return epoch_layout(steps, batch_size, self.train_images)

    def data(self, args: argparse.Namespace) -> DataConfig | None:
        data = self._dataset_config(args)
        if data is None or args.recipe != "paper" or self.PAPER_PATCHES is None:
            return data
        batch = self.PAPER_BATCH if args.batch_size is None else args.batch_size  # as sweep_profile chooses it
        return dataclasses.replace(data, patches_per_image=self.paper_layout(batch)[0])

    def _dataset_config(self, args: argparse.Namespace) -> DataConfig | None:
        missing = benchmark_missing({"--val-root": args.val_root, "--set14-root": args.set14_root}, args.scale)
        if missing:
            print(f"no benchmark set (HR/ and LR_bicubic/X{args.scale}/) at {', '.join(missing)}", file=sys.stderr)
            return None
        patch = self.patch[1 if args.smoke else 0] if args.patch_size is None else args.patch_size
        common: dict[str, Any] = dict(task="sr", scale=args.scale, y_channel=args.y_channel, tile=args.tile,
                                      tile_overlap=args.tile_overlap, patch_size=patch,
                                      patches_per_image=self.patches_per_image[1 if args.smoke else 0])
        if args.val_root is not None:
            common.update(val_dataset="paired", val_root=str(args.val_root.expanduser().resolve()))
        if args.smoke:
            # the scikit-image photo demo (6 train, 2 val images) under the cache dir: the pipeline end to end in
            # minutes on two cores, not a result
            return DataConfig(dataset="demo_sr", root=str(CacheLayout.of(args.cache_dir).dataset("sr-demo")), **common)
        root = find_div2k(args.data_root, args.cache_dir, args.scale, args.download)
        if root is None:
            return None
        if train_set(args) == "div2k":
            self.train_images = DIV2K_TRAIN_IMAGES
            return DataConfig(dataset="div2k", root=str(root), **common)
        return self._df2k_config(args, root, common)

    def _df2k_config(self, args: argparse.Namespace, div2k: Path, common: dict[str, Any]) -> DataConfig:
        """DF2K's training data (:func:`find_df2k`), validated on ``--val-root`` or DIV2K's valid split."""
        root, manifest = find_df2k(div2k, args.flickr2k_root, args.cache_dir, args.scale)
        self.train_images = sum(manifest["images"].values())
        dataset = "paired" if args.scale in manifest["lr_scales"] else "hr_folder"
        if dataset == "hr_folder":
            print(f"DF2K at {root}: Flickr2K has no Flickr2K_LR_bicubic/X{args.scale}/, so every LR input is made "
                  "with MATLAB's bicubic (dataset hr_folder) when the split is decoded", file=sys.stderr, flush=True)
        if args.val_root is None:
            common = {**common, "val_dataset": "div2k", "val_root": str(div2k)}
        return DataConfig(dataset=dataset, root=str(root), **common)

    def optim(self, args: argparse.Namespace, profile: Profile) -> OptimConfig:
        # the SR recipe (EDSR/RCAN/SwinIR, DVMSR, MTKD): Adam (0.9, 0.999), no weight decay
        lr = self.learning_rate[1 if args.smoke else 0] if args.lr is None else args.lr  # a given 0 is refused
        return OptimConfig(name="adam", lr=lr, betas=(0.9, 0.999),
                           weight_decay=0.0, schedule="cosine", epochs=profile.epochs, batch_size=profile.batch_size)

    def after(self, args: argparse.Namespace, sweep: SweepConfig, base: TrainConfig) -> None:
        if args.set14_root is not None:
            add_test_sets(sweep.directory, base, {"set14": args.set14_root.expanduser().resolve()}, args.cache_dir,
                          gpus=min(args.gpus_per_worker, 1))


# ------------------------------------------------------------------ every trial's final student on test sets


def _test_data(base: TrainConfig, root: Path) -> DataConfig:
    # the test folder is also the (unused) training split: the task then needs nothing but the test set
    data = base.data
    return DataConfig(task="sr", dataset="paired", root=str(root), val_root=str(root), scale=data.scale,
                      patch_size=1, y_channel=data.y_channel, tile=data.tile, tile_overlap=data.tile_overlap)


def evaluate_checkpoint(weights: bytes, model_entry: tuple[str, Mapping[str, Any]],
                        tests: Mapping[str, tuple[DataConfig, Any]]) -> dict[str, float]:
    """PSNR/SSIM of a checkpoint's model (its ``model.safetensors`` bytes and the checked ``(model name, kwargs)``
    of its ``meta.json``) on each test set
    ``{name: (data, decoded split or its object-store reference)}``, with :meth:`SRTask.evaluate` (run as a Ray
    task, on a GPU when given one)."""
    import ray

    from raykd.models.build import build_model
    from raykd.train.loop import resolve_device
    from raykd.train.tasks import SRTask

    device = resolve_device("auto")
    model = build_model(*model_entry, weights, frozen=True, device=device)
    out = {}
    for name, (data, arrays) in tests.items():
        arrays = ray.get(arrays) if isinstance(arrays, ray.ObjectRef) else arrays
        metrics = SRTask(data, arrays, arrays, seed=0).evaluate(model, device)
        out[f"{name}_psnr"], out[f"{name}_ssim"] = metrics["val_psnr"], metrics["val_ssim"]
    return out


def add_test_sets(directory: str, base: TrainConfig, tests: Mapping[str, Path], cache_dir: str, gpus: float = 0
                  ) -> pd.DataFrame | None:
    """Measure every trial's final student (search and seeds stages) on each test set ``{name: benchmark folder}``
    and merge ``last_val_ssim`` and ``<name>_psnr``/``<name>_ssim`` into ``<directory>/results.parquet`` by trial;
    append the per-trial table and the best searched trial of each method to ``summary.md``. Returns the table
    (``None`` for remote storage, which this step does not handle yet)."""
    import ray

    from raykd.data.arrays import load_split
    from raykd.data.store import cache_store

    if is_uri(directory):
        print(f"test sets: skipped for remote storage {directory} (measure the checkpoints with raykd eval-sr)")
        return None
    root = Path(directory)
    if not (root / "results.parquet").exists():
        return None
    store = cache_store(cache_dir)
    sets = {}
    for name, folder in tests.items():
        data = _test_data(base, Path(folder))
        sets[name] = (data, ray.put(load_split(data, "val", store)))
    table = pd.read_parquet(root / "results.parquet")
    added = pd.DataFrame(_measure_trials(root, sets, gpus))
    if added.empty:
        return table
    table = table.drop(columns=[c for c in added.columns if c != "trial" and c in table.columns])
    table = table.merge(added, on="trial", how="left")
    table.to_parquet(root / "results.parquet", index=False)
    summary = root / "summary.md"
    summary.write_text((summary.read_text() if summary.exists() else "") + "\n".join(_test_summary(table, base, tests))
                       + "\n")
    return table


def _measure_trials(root: Path, sets: Mapping[str, tuple[DataConfig, Any]], gpus: float) -> list[dict[str, Any]]:
    """A row per trial of the search and seeds stages: its last ``val_ssim`` and, where it kept a checkpoint, its
    final student's PSNR/SSIM on each test set (:func:`evaluate_checkpoint`, one Ray task a trial). A checkpoint is
    verified against its manifest here, once: the task builds the model from the bytes read after that."""
    import ray
    from ray.tune import ExperimentAnalysis

    from raykd.models.checkpoint import META_FILE, MODEL_FILE, model_entry, verify

    evaluate = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_checkpoint)
    rows, pending = [], []
    for experiment in (root, root.with_name(root.name + "-seeds")):
        if not (experiment / "tuner.pkl").exists() and not any(experiment.glob("experiment_state*.json")):
            continue
        analysis = ExperimentAnalysis(str(experiment))
        for trial in analysis.trials:
            last = trial.last_result or {}
            rows.append({"trial": last.get("trial_id", trial.trial_id),
                         "last_val_ssim": float(last.get("val_ssim", math.nan))})
            checkpoint = analysis.get_last_checkpoint(trial)
            if checkpoint is None:
                continue
            with checkpoint.as_directory() as path:
                model = model_entry(verify(path), Path(path) / META_FILE)
                weights = (Path(path) / MODEL_FILE).read_bytes()
            pending.append((rows[-1], evaluate.remote(weights, model, sets)))
    for row, ref in pending:
        row.update(ray.get(ref))
    return rows


def _test_summary(table: pd.DataFrame, base: TrainConfig, tests: Mapping[str, Path]) -> list[str]:
    """The lines ``summary.md`` gains: the best searched trial of each method, then every trial, on the test sets."""
    metric = "val_psnr"
    columns = [c for c in [f"best_{metric}", f"last_{metric}", "last_val_ssim",
                           *[f"{n}_{m}" for n in tests for m in ("psnr", "ssim")]] if c in table.columns]
    val = base.data.val_root or f"{base.data.dataset} val"
    lines = ["", f"## Test sets: every trial's final student (val: {val}; "
             + ", ".join(f"{n}: {p}" for n, p in tests.items()) + f"; Y {base.data.y_channel}, "
             f"{base.data.scale}-pixel border)", ""]
    ok = table[(table["status"] == "ok") & (table["stage"] == "search")]
    if not ok.empty:
        best = ok.loc[ok.groupby("method")[f"best_{metric}"].idxmax().values]
        lines += ["Best searched trial of each method (by val PSNR):", "",
                  "| method | trial | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
        for _, r in best.sort_values(f"best_{metric}", ascending=False).iterrows():
            lines.append(f"| {r['method']} | {r['trial']} | " + " | ".join(f"{r[c]:.4f}" for c in columns) + " |")
        lines.append("")
    lines += ["| trial | stage | method | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        lines.append(f"| {r['trial']} | {r['stage']} | {r['method']} | " + " | ".join(f"{r[c]:.4f}" for c in columns)
                     + " |")
    return lines
