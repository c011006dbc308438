"""Super-resolution training behind the :class:`raykd.train.tasks.Task` interface (``task="sr"``).

The student sees aligned random LR patches (:class:`raykd.data.sr.SRPatches`) and is evaluated on whole val
images: PSNR/SSIM on the BT.601 Y channel (the grey channel for greyscale images), ``scale`` pixels of border
cropped, uint8-quantised, luma rounded as MATLAB's ``rgb2ycbcr`` does (the convention of the EDSR/RCAN/SwinIR
tables; :mod:`raykd.metrics`).

Teachers are cached per *whole image*: one row per training image (view 0) holding the teacher's SR output at
HR resolution in float16, computed by tiled inference so that memory stays bounded on 2K images. The trainer
crops, flips and rotates that image with each batch's ``box`` exactly like the HR patch, so every epoch draws
fresh patches from one cache entry, and a sweep over the patch size or seed reuses it too.

The SR image is the output named ``"logits"`` (what :func:`raykd.models.features.forward_features` calls the
forward's result, and what the SR methods request).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from raykd.data.sr import PatchView, SRDataset, SRPatches, crop_box, open_sr_dataset, orient, to_tensor
from raykd.metrics import psnr, ssim
from raykd.models.features import unwrap_model
from raykd.teachers.cache import CacheEntry
from raykd.teachers.sources import Fetch, run_teacher
from raykd.train.config import TrainConfig
from raykd.train.tasks import TASKS, Task

# Bumped whenever what a cached SR teacher row means changes (crop convention, dtype, tiling rule).
SR_TEACHER_FORMAT = 1


def check_tiling(tile: int, overlap: int) -> None:
    """Refuse an overlap that leaves a tile no step (``tile <= 0`` means untiled and takes any overlap)."""
    if tile > 0 and not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap={overlap} must be >= 0 and smaller than tile={tile}")


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: ``(start, end, own_start, own_end)`` in input pixels.

    Tiles of ``tile`` pixels step by ``tile - overlap`` (the last one is moved back to end at ``length``); each
    output pixel is taken from exactly one tile, the one in whose share it lies, split at the middle of every
    overlap. A pixel then sees at least ``overlap // 2`` pixels of context on each inner side, so a network whose
    receptive field radius is within that gives the untiled result exactly. ``tile <= 0`` or a short axis: one tile.
    """
    check_tiling(tile, overlap)
    if tile <= 0 or length <= tile:
        return [(0, length, 0, length)]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


@torch.no_grad()
def sr_forward(model: nn.Module, x: Tensor, scale: int, tile: int = 128, overlap: int = 16,
               amp: bool = False) -> Tensor:
    """Super-resolve ``x`` (B, C, h, w) with ``model`` tile by tile (:func:`tile_spans` on both axes).

    Returns (B, C_out, h*scale, w*scale) float32 on the CPU, so only one tile's activations are ever on the
    device. ``amp`` runs the tiles under autocast (half precision on CUDA).
    """
    b, _, h, w = x.shape
    out: Tensor | None = None
    for ys, ye, yo0, yo1 in tile_spans(h, tile, overlap):
        for xs, xe, xo0, xo1 in tile_spans(w, tile, overlap):
            with torch.autocast(x.device.type, enabled=amp):
                y = model(x[..., ys:ye, xs:xe])
            expected = ((ye - ys) * scale, (xe - xs) * scale)
            if tuple(y.shape[-2:]) != expected:
                raise ValueError(f"{type(unwrap_model(model)).__name__} turned a {ye - ys}x{xe - xs} input into "
                                 f"{tuple(y.shape[-2:])}, not x{scale} {expected}: build it with scale={scale}")
            if out is None:
                out = torch.empty((b, y.shape[1], h * scale, w * scale), dtype=torch.float32)
            out[..., yo0 * scale:yo1 * scale, xo0 * scale:xo1 * scale] = \
                y[..., (yo0 - ys) * scale:(yo1 - ys) * scale, (xo0 - xs) * scale:(xo1 - xs) * scale].float().cpu()
    assert out is not None
    return out


def _device_of(model: nn.Module) -> torch.device:
    param = next(unwrap_model(model).parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class SRCachedTeacher:
    """Serves SR teacher patches from a cache of whole-image outputs (one row per image, view 0): each sample's
    image is cropped with the batch's ``box`` at HR resolution, flipped and rotated like the HR patch.

    With ``lr_size`` (image index -> its LR (rows, cols)), an output whose spatial size is the LR image's (an
    intermediate feature such as DVMSR's ``"body"``) is cropped with the LR box itself (scale 1)."""

    def __init__(self, entry: CacheEntry, outputs: Sequence[str], scale: int,
                 lr_size: Callable[[int], tuple[int, int]] | None = None):
        missing = [name for name in outputs if name not in entry.outputs]
        if missing:
            raise KeyError(f"cached teacher outputs lack {missing}; the cache holds {list(entry.outputs)}")
        self.entry, self.outputs, self.scale, self.lr_size = entry, tuple(outputs), scale, lr_size
        self.hits = 0

    def request(self, batch: dict[str, Tensor]) -> Fetch:
        index = batch["index"].numpy()
        found = self.entry.lookup(index, np.zeros_like(index), self.outputs)
        views = [PatchView.from_box(box) for box in batch["box"]]
        out = {}
        for name, rows in found.items():
            patches = []
            for image, row, view in zip(index.tolist(), rows, views):
                lr_res = self.lr_size is not None and tuple(row.shape[-2:]) == tuple(self.lr_size(image))
                scale = 1 if lr_res else self.scale
                try:
                    crop = crop_box(row, view, scale)
                except ValueError as err:
                    raise ValueError(f"cached teacher output {name!r} of image {image} ({tuple(row.shape)}) does "
                                     f"not hold this x{scale} patch: {err}") from err
                # crop before copying: the cached row is a read-only whole image, the patch a small fraction of it
                patches.append(orient(torch.from_numpy(np.array(crop, dtype=np.float32)), view))
            out[name] = torch.stack(patches)
        self.hits += len(index)
        return lambda: out


class SRTask(Task):
    """Super-resolution from ``cfg.data`` (``"demo_sr"``, ``"paired"``, ``"hr_folder"``, ``"div2k"``) at
    ``cfg.scale``; the student always sees the LR patch (``input_key`` is ``"lr"`` whatever is asked)."""

    name = "sr"
    metric = "val_psnr"
    target_key = "hr"
    teacher_input_key = "lr"

    def __init__(self, cfg: TrainConfig, student_input: str = "lr"):
        super().__init__(cfg, "lr")
        train_base = open_sr_dataset(cfg.data, cfg.data_root, cfg.scale, "train")
        self.val = self._open_val(cfg)
        if cfg.check_data:  # every image decoded first: a broken file stops the run before training starts
            for base in (train_base, self.val):
                base.check()
        self.train = SRPatches(train_base, cfg.patch_size, seed=cfg.seed, repeat=cfg.patches_per_image,
                               flip=cfg.flip, rot90=cfg.rot90)
        self.fingerprint = train_base.fingerprint()
        self.num_views = 1  # one cached row (the whole image) per training image
        self.teacher_rows = len(train_base)
        check_tiling(cfg.tile, cfg.tile_overlap)

    @staticmethod
    def _open_val(cfg: TrainConfig) -> SRDataset:
        if cfg.val_data is None and cfg.val_root is None:
            if cfg.data not in ("demo_sr", "div2k"):
                raise ValueError(f"SR data {cfg.data!r} has no val split: set val_root to a benchmark folder in the "
                                 "HR + LR_bicubic/X{s} layout (e.g. Set5), or val_data")
            return open_sr_dataset(cfg.data, cfg.data_root, cfg.scale, "val")
        kind = cfg.val_data or "paired"
        root = cfg.val_root if cfg.val_root is not None or kind != cfg.data else cfg.data_root
        return open_sr_dataset(kind, root, cfg.scale, "val")

    def model_kwargs(self) -> dict[str, Any]:
        return {"scale": self.cfg.scale}

    def teacher_inputs(self) -> dict[str, Any]:
        """The whole-image teacher input and how its output is computed; not the patch plan, which only crops."""
        return {"task": "sr", "format": SR_TEACHER_FORMAT, "scale": self.cfg.scale,
                "lr_source": self.train.base.lr_source, "tile": self.cfg.tile, "tile_overlap": self.cfg.tile_overlap,
                "dtype": "float16"}

    def teacher_batches(self, indices: Sequence[int], batch_size: int) -> Iterator[dict[str, Any]]:
        """One whole LR image per batch (sizes differ), view 0. With ``patches_per_image`` r, items ``i`` with
        ``i % r == 0`` stand for their image ``i // r``, so every image is computed once over the item range."""
        repeat = self.train.repeat
        for i in indices:
            if i % repeat:
                continue
            image = i // repeat
            lr, _ = self.train.base.pair(image)
            yield {"index": np.array([image], dtype=np.int64), "view": np.zeros(1, dtype=np.int64),
                   "input": to_tensor(lr)[None]}

    def teacher_forward(self, model: nn.Module, x: Tensor, outputs: Sequence[str]) -> dict[str, Tensor]:
        """The SR image, tiled (``cfg.tile``/``cfg.tile_overlap``), float16, under autocast on CUDA; requests for
        intermediate features run untiled through :func:`run_teacher`."""
        if tuple(outputs) == ("logits",):
            device = _device_of(model)
            y = sr_forward(model, x.to(device), self.cfg.scale, self.cfg.tile, self.cfg.tile_overlap,
                           amp=device.type == "cuda").half()
            return {"logits": y}
        return run_teacher(model, x, outputs)

    def cached_teacher(self, entry: CacheEntry, outputs: Sequence[str]) -> SRCachedTeacher:
        return SRCachedTeacher(entry, outputs, self.cfg.scale, self.train.base.lr_size)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over the val images, whole images super-resolved tile by tile in float32.

        A greyscale image is measured on one channel: the HR's, against the mean of the output's three channels.
        """
        net = unwrap_model(model)  # no DDP collectives: every worker evaluates the same images
        was_training = net.training
        net.eval()
        s = self.cfg.scale
        psnrs, ssims = [], []
        try:
            for i in range(len(self.val)):
                lr, hr = self.val.pair(i)
                sr = sr_forward(net, to_tensor(lr)[None].to(device), s, self.cfg.tile, self.cfg.tile_overlap)
                out = sr[0].permute(1, 2, 0).numpy()
                ref = hr
                if self.val.is_grey(i):
                    out, ref = out.mean(axis=2), hr[:, :, 0]
                psnrs.append(psnr(out, ref, s, y_rounding=True))
                ssims.append(ssim(out, ref, s, y_rounding=True))
        finally:
            net.train(was_training)
        return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}


TASKS["sr"] = SRTask
