"""Replayable augmentation: views of a sample that can be re-applied to its HR image, its LR image and looked up
in a cache of teacher outputs.

A view is a crop box (in HR pixels of the zero-padded image) and a horizontal flip, drawn from
``np.random.default_rng([seed, index, k])``: it depends on nothing but the plan's seed, the sample index and the
view number ``k``, so the teacher service that caches K views per sample and a student loader in another process
produce the same view. Epoch ``e`` uses view ``e % num_views``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from raykd.data.classification import ClassificationDataset

# Bumped whenever the way views are drawn changes, so cached teacher outputs of old views are not reused.
VIEW_PLAN_VERSION = 1


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


@dataclass(frozen=True)
class View:
    """View ``k`` of sample ``index``: crop at (``top``, ``left``) of the padded HR image, then mirror if ``flip``."""

    index: int
    k: int
    top: int
    left: int
    flip: bool


@dataclass(frozen=True)
class ViewPlan:
    """How views are drawn: ``num_views`` per sample, a ``crop`` (int or (h, w); None = the unpadded image size)
    taken from the image zero-padded by ``padding`` on every side, and a random horizontal flip when ``flip``.

    ``align`` makes crop offsets multiples of ``align`` HR pixels; set it to the LR factor so the same view can be
    applied exactly to the LR image (``apply(..., scale=factor)``).
    """

    seed: int = 0
    num_views: int = 1
    crop: int | tuple[int, int] | None = None
    padding: int = 0
    flip: bool = False
    align: int = 1

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"ViewPlan seed={self.seed}: must be >= 0 (it seeds numpy's SeedSequence)")
        if self.num_views < 1:
            raise ValueError(f"ViewPlan num_views={self.num_views}: must be >= 1")
        if self.padding < 0:
            raise ValueError(f"ViewPlan padding={self.padding}: must be >= 0")
        if self.align < 1:
            raise ValueError(f"ViewPlan align={self.align}: must be >= 1")
        if self.crop is not None:
            crop = _pair(self.crop)
            if min(crop) < 1:
                raise ValueError(f"ViewPlan crop={self.crop}: sides must be >= 1")
            object.__setattr__(self, "crop", crop)

    def view_for_epoch(self, epoch: int) -> int:
        """The view number used in ``epoch``."""
        return epoch % self.num_views

    def crop_size(self, image_size: int | Sequence[int]) -> tuple[int, int]:
        """(h, w) of a view of an image of ``image_size``."""
        return self.crop if self.crop is not None else _pair(image_size)

    def view(self, index: int, k: int, image_size: int | Sequence[int]) -> View:
        """View ``k`` of sample ``index`` for an HR image of ``image_size`` ((h, w) or a square side)."""
        if not 0 <= k < self.num_views:
            raise ValueError(f"view k={k} outside 0..{self.num_views - 1} of this ViewPlan")
        h, w = _pair(image_size)
        ch, cw = self.crop_size(image_size)
        room_h, room_w = h + 2 * self.padding - ch, w + 2 * self.padding - cw
        if room_h < 0 or room_w < 0:
            raise ValueError(f"crop {ch}x{cw} does not fit an image of {h}x{w} padded by {self.padding}")
        rng = np.random.default_rng([self.seed, index, k])
        # All three draws happen whatever the settings, so turning flip on does not move the crops.
        top = int(rng.integers(0, room_h // self.align + 1)) * self.align
        left = int(rng.integers(0, room_w // self.align + 1)) * self.align
        flip = bool(rng.random() < 0.5) and self.flip
        return View(index=index, k=k, top=top, left=left, flip=flip)

    def apply(self, img: Tensor, view: View, scale: int = 1) -> Tensor:
        """Pad, crop and flip ``img`` (..., C, H, W) as ``view`` says.

        ``img`` is the HR image when ``scale == 1``; for an image ``scale`` times smaller (the LR input, or an
        LR-sized teacher output) padding and box are divided by ``scale``, which must divide them exactly.
        """
        pad, top, left = self.padding, view.top, view.left
        h, w = img.shape[-2:]
        ch, cw = self.crop_size((h * scale, w * scale))
        if scale != 1:
            parts = {"padding": pad, "top": top, "left": left, "crop height": ch, "crop width": cw}
            bad = {k: v for k, v in parts.items() if v % scale}
            if bad:
                raise ValueError(f"view {bad} is not divisible by scale {scale}: use ViewPlan(align={scale}) and a "
                                 f"crop and padding that are multiples of {scale}")
            pad, top, left, ch, cw = pad // scale, top // scale, left // scale, ch // scale, cw // scale
        if top + ch > h + 2 * pad or left + cw > w + 2 * pad:
            raise ValueError(f"view box top={top} left={left} size {ch}x{cw} exceeds the {h}x{w} image padded by {pad}")
        if pad:
            img = F.pad(img, (pad, pad, pad, pad))
        out = img[..., top:top + ch, left:left + cw]
        return out.flip(-1) if view.flip else out

    def to_dict(self) -> dict[str, Any]:
        """A stable, JSON-able description for cache keys."""
        return {"version": VIEW_PLAN_VERSION, "seed": self.seed, "num_views": self.num_views,
                "crop": list(self.crop) if self.crop is not None else None, "padding": self.padding,
                "flip": self.flip, "align": self.align}


@dataclass(frozen=True)
class LowResolution:
    """The LR input made from an HR tensor (..., C, H, W) in [0, 1].

    ``mode="down"``: bicubic downscaling by ``factor`` with antialiasing (PIL's kernel, a = -0.5), to
    (H // factor, W // factor). ``mode="down_up"``: the same, then bicubic back up to (H, W): DFD's
    low-resolution input, which keeps the network's input size. Results are clamped to [0, 1] because
    bicubic overshoots at edges.
    """

    factor: int
    mode: str = "down"

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"LowResolution factor={self.factor}: must be >= 1")
        if self.mode not in ("down", "down_up"):
            raise ValueError(f"LowResolution mode={self.mode!r}: expected 'down' or 'down_up'")

    def __call__(self, hr: Tensor) -> Tensor:
        h, w = hr.shape[-2:]
        if h < self.factor or w < self.factor:
            raise ValueError(f"image of {h}x{w} is smaller than the LR factor {self.factor}")
        x = hr.reshape(-1, *hr.shape[-3:]).float()
        x = F.interpolate(x, size=(h // self.factor, w // self.factor), mode="bicubic", antialias=True,
                          align_corners=False)
        if self.mode == "down_up":
            x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        return x.clamp_(0, 1).reshape(*hr.shape[:-2], *x.shape[-2:])


class ViewDataset(Dataset):
    """Training/eval samples of a classification dataset under a ViewPlan.

    Each image is resized to ``image_size`` x ``image_size`` (bicubic), viewed with view ``epoch % num_views``
    (``set_epoch``; a view ``k`` directly with ``get(i, k)``), and normalised with ``mean``/``std``. Items are
    ``{"hr", "lr" (only with ``lr``; made from the viewed HR), "label", "index", "view"}``.

    When the resized set fits in ``cache_bytes`` it is decoded once at construction and kept as uint8, because
    small sets are re-read every epoch. DataLoader workers see the epoch set before the loader's iterator is
    created; with ``persistent_workers=True`` they keep the epoch they started with, so iterate with
    non-persistent workers (the default) when ``num_views > 1``.
    """

    def __init__(self, base: ClassificationDataset, plan: ViewPlan, image_size: int, mean: Sequence[float],
                 std: Sequence[float], lr: LowResolution | None = None,
                 cache_bytes: int = 512 * 2**20) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean {list(mean)} and std {list(std)} need one value per RGB channel")
        self.base, self.plan, self.image_size, self.lr = base, plan, int(image_size), lr
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.epoch = 0
        self.cache: Tensor | None = None
        if len(base) * 3 * self.image_size ** 2 <= cache_bytes:
            self.cache = torch.empty((len(base), 3, self.image_size, self.image_size), dtype=torch.uint8)
            for i in range(len(base)):
                self.cache[i] = self._decode(i)

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _decode(self, i: int) -> Tensor:
        img = self.base.image(i)
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)

    def hr_image(self, i: int) -> Tensor:
        """Sample ``i`` resized, before any view: uint8 (3, image_size, image_size)."""
        return self.cache[i] if self.cache is not None else self._decode(i)

    def get(self, i: int, k: int) -> dict[str, Any]:
        """Sample ``i`` under view ``k``."""
        view = self.plan.view(i, k, self.image_size)
        hr = self.plan.apply(self.hr_image(i).float() / 255, view)
        item = {"hr": (hr - self.mean) / self.std, "label": self.base.label(i), "index": i, "view": k}
        if self.lr is not None:
            item["lr"] = (self.lr(hr) - self.mean) / self.std
        return item

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i, self.plan.view_for_epoch(self.epoch))
