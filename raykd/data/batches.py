"""Batches of a decoded split, built as tensor ops on the training device.

``ClassificationBatches.batch(indices, view, device)`` gathers the batch's uint8 images from the shared arrays
(one numpy take), moves them to ``device`` (pinned and non-blocking on CUDA) and computes there the views
(:class:`raykd.data.views.CropFlip`, or :class:`~raykd.data.views.ResizedCrop` for ``crop="resized"``), the
normalisation and, when asked, the LR input. ``SRBatches`` does the same
for aligned LR/HR patches (:class:`raykd.data.views.PatchViews`). The trainer, the in-process teacher and the
teacher service all build their inputs here, so a teacher's stored output for (sample, view) is the output for
exactly the view the student trains on.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from raykd.config import DataConfig
from raykd.data.arrays import ImageArrays, PairArrays
from raykd.data.views import CropFlip, LowResolution, PatchViews, ResizedCrop, normalise

__all__ = ["ClassificationBatches", "SRBatches", "class_views", "to_device"]


def to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A numpy array as a tensor on ``device``: through pinned memory and a non-blocking copy on CUDA."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def class_views(data: DataConfig, seed: int) -> CropFlip | ResizedCrop:
    """The training views ``data.crop`` names: the padded crop (``"pad"``) or the random resized crop
    (``"resized"``). Their ``describe()`` differ, so teacher outputs of the two never share a content key."""
    if data.crop == "resized":
        return ResizedCrop(seed, data.image_size, data.crop_scale, data.crop_ratio, data.flip)
    return CropFlip(seed, data.image_size, data.crop_padding, data.flip)


class ClassificationBatches:
    """Batches of an :class:`ImageArrays` split: ``{"hr", "lr" (when asked), "label", "index", "view"}``.

    Training batches are views (:func:`class_views`, seed ``seed``); evaluation batches (``views=False``) are the
    resized images themselves. ``"hr"`` and ``"lr"`` are ImageNet-normalised float32 ``(B, 3, H, W)``.
    """

    def __init__(self, arrays: ImageArrays, data: DataConfig, seed: int, views: bool = True) -> None:
        self.arrays = arrays
        self.views = class_views(data, seed) if views else None
        self.lowres = LowResolution(data.lr_factor, data.lr_mode)

    def __len__(self) -> int:
        return len(self.arrays)

    def batch(self, indices: np.ndarray, view: int, device: torch.device, inputs: tuple[str, ...] = ("hr",)
              ) -> dict[str, Any]:
        indices = np.asarray(indices, dtype=np.int64)
        images = to_device(self.arrays.images[indices], device)
        levels = self.views.apply(images, indices, view) if self.views is not None else images.permute(0, 3, 1, 2)
        out: dict[str, Any] = {"index": indices, "view": view,
                               "label": to_device(self.arrays.labels[indices], device)}
        if "hr" in inputs:
            out["hr"] = normalise(levels)
        if "lr" in inputs:
            out["lr"] = normalise(self.lowres(levels.float().div_(255.0)))
        return out

    def describe(self) -> dict[str, Any]:
        """What a view's HR input depends on, for content keys of teacher outputs."""
        views = self.views.describe() if self.views is not None else {"views": None}
        return {"data": self.arrays.key, **views, "normalise": "imagenet"}


class SRBatches:
    """Aligned patch batches of a :class:`PairArrays` split: ``{"lr", "hr", "index" (image), "view", "box"}``;
    ``"lr"``/``"hr"`` are float32 in [0, 1], ``"box"`` the :meth:`PatchViews.draw` boxes that cut them (and that
    cut whole-image teacher outputs the same way)."""

    def __init__(self, arrays: PairArrays, data: DataConfig, seed: int) -> None:
        self.arrays = arrays
        self.views = PatchViews(seed, data.patch_size, data.scale, data.patches_per_image, data.flip, data.rot90)
        self.scale = data.scale

    def __len__(self) -> int:
        return len(self.arrays) * self.views.repeat

    def batch(self, items: np.ndarray, view: int, device: torch.device, inputs: tuple[str, ...] = ("lr",)
              ) -> dict[str, Any]:
        image, k = self.views.view_numbers(items, view)
        boxes = self.views.draw(image, k, self.arrays.lr_sizes(image))
        lr = PatchViews.crop(self.arrays.lr.take(image), boxes)
        hr = PatchViews.crop(self.arrays.hr.take(image), boxes, self.scale)
        to_patch = lambda a: PatchViews.orient(to_device(a, device).permute(0, 3, 1, 2), boxes).float().div_(255.0)
        return {"lr": to_patch(lr), "hr": to_patch(hr), "index": image, "view": k, "box": boxes}

    def whole(self, image: int, device: torch.device) -> Tensor:
        """Image ``image``'s whole LR input, float32 ``(1, 3, h, w)`` in [0, 1] (what SR teachers are run on)."""
        return to_device(np.array(self.arrays.lr[image]), device).permute(2, 0, 1)[None].float().div_(255.0)

    def describe(self) -> dict[str, Any]:
        """What a whole-image teacher output depends on (not the patch views, which only crop it)."""
        return {"data": self.arrays.key, "input": "whole_lr_image"}
