"""What differs between classification and super-resolution training: their data and their evaluation.

A :class:`Task` holds a run's decoded train and val splits (:mod:`raykd.data.arrays`), builds its batches on the
training device (:mod:`raykd.data.batches`) and evaluates a model. Tasks are registered in
:data:`raykd.registry.TASKS` under the data's task name; :func:`build_task` builds one per (data, seed, splits)
per process and reuses it, so a process running many trials (Tune reuses trial actors) builds its task once.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from raykd.config import DataConfig
from raykd.data.arrays import ImageArrays, PairArrays, load_split
from raykd.data.batches import ClassificationBatches, SRBatches
from raykd.data.store import Store
from raykd.metrics import psnr, ssim
from raykd.models.features import unwrap_model
from raykd.models.tiling import super_resolve
from raykd.registry import TASKS

__all__ = ["Task", "ClassificationTask", "SRTask", "build_task", "task_builds"]


class Task:
    """A run's data and evaluation. Subclasses set the class attributes and ``train`` (its batches)."""

    metric: ClassVar[str]  # reported every epoch and maximised by sweeps
    output: ClassVar[str]  # what the model's own output is called ("logits", "image")
    target_key: ClassVar[str]  # the batch entry the loss compares with
    teacher_input: ClassVar[str]  # the batch entry an in-process or live teacher runs on
    # the batch entry the trained model runs on where the task fixes it (MTKD's stage 1: the teachers' outputs);
    # None: the method's ``student_input``
    model_input: ClassVar[str | None] = None
    train: ClassificationBatches | SRBatches

    def __init__(self, data: DataConfig, train: Any, val: Any, seed: int) -> None:
        self.data, self.seed = data, seed
        self.train_arrays, self.val_arrays = train, val

    def __len__(self) -> int:
        return len(self.train)

    def batch(self, indices: np.ndarray, epoch: int, device: torch.device, inputs: tuple[str, ...]
              ) -> dict[str, Any]:
        """Training batch of items ``indices`` in epoch ``epoch`` (its view is ``data.view_for_epoch(epoch)``)."""
        return self.train.batch(indices, self.data.view_for_epoch(epoch), device, inputs)

    def model_kwargs(self) -> dict[str, Any]:
        """What the task fixes about the model (number of classes, SR scale)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, device: torch.device, input_key: str) -> dict[str, float]:
        raise NotImplementedError


@TASKS.register(name="cls")
class ClassificationTask(Task):
    """Image classification, optionally with a low-resolution student input (DFD, ViMD)."""

    metric = "val_top1"
    output = "logits"
    target_key = "label"
    teacher_input = "hr"

    def __init__(self, data: DataConfig, train: ImageArrays, val: ImageArrays, seed: int) -> None:
        super().__init__(data, train, val, seed)
        if tuple(val.classes) != tuple(train.classes):
            raise ValueError(f"{data.dataset} at {data.root}: the val split's classes differ from the train split's")
        self.num_classes = len(train.classes)
        self.train = ClassificationBatches(train, data, seed)
        self.val = ClassificationBatches(val, data, seed, views=False)

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, input_key: str) -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) and mean cross-entropy on the val split."""
        was_training = model.training
        model.eval()
        correct1 = correct5 = 0
        loss_sum = 0.0
        n = len(self.val)
        try:
            for start in range(0, n, 256):
                batch = self.val.batch(np.arange(start, min(n, start + 256)), 0, device, (input_key,))
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits = model(batch[input_key]).float()
                y = batch["label"]
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                correct1 += (top[:, 0] == y).sum().item()
                correct5 += (top == y[:, None]).any(dim=1).sum().item()
        finally:
            model.train(was_training)
        return {"val_top1": 100.0 * correct1 / n, "val_top5": 100.0 * correct5 / n, "val_loss": loss_sum / n}


@TASKS.register(name="sr")
class SRTask(Task):
    """Super-resolution at ``data.scale``: aligned LR/HR training patches; whole val images super-resolved (tiled
    when ``data.tile`` > 0) and measured as the SR literature does (:mod:`raykd.metrics`: BT.601 Y, luma rounded
    when ``data.y_channel == "matlab"``, ``scale`` pixels of border, uint8; greyscale images on their channel)."""

    metric = "val_psnr"
    output = "image"
    target_key = "hr"
    teacher_input = "lr"

    def __init__(self, data: DataConfig, train: PairArrays, val: PairArrays, seed: int) -> None:
        super().__init__(data, train, val, seed)
        self.train = SRBatches(train, data, seed)

    def model_kwargs(self) -> dict[str, Any]:
        return {"scale": self.data.scale}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, input_key: str = "lr") -> dict[str, float]:
        """Mean PSNR (dB) and SSIM of ``model``'s whole (or tiled) SR images of the val split."""
        net = unwrap_model(model)  # no DDP collectives: every worker evaluates the same images
        return self.score(net, lambda i: self.val_image(net, i, device))

    def val_image(self, net: nn.Module, index: int, device: torch.device) -> torch.Tensor:
        """``net``'s ``(3, sH, sW)`` SR image (on the CPU) of val image ``index``: whole, or tiled when
        ``data.tile`` > 0."""
        lr = torch.from_numpy(np.array(self.val_arrays.lr[index])).permute(2, 0, 1)[None].float().div_(255.0)
        return super_resolve(net, lr.to(device), self.data.scale, self.data.tile, self.data.tile_overlap)[0]

    @torch.no_grad()
    def score(self, net: nn.Module, image: Callable[[int], torch.Tensor]) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over the val images of ``image(i)``, the ``(3, sH, sW)`` SR image of val image
        ``i`` that ``net`` makes (run in eval mode). A greyscale image is measured on one channel: the HR's,
        against the mean of the output's three channels."""
        was_training = net.training
        net.eval()
        s, rounding = self.data.scale, self.data.y_channel == "matlab"
        val = self.val_arrays
        psnrs, ssims = [], []
        try:
            for i in range(len(val)):
                out, ref = image(i).float().permute(1, 2, 0).cpu().numpy(), val.hr[i]
                if val.grey[i]:
                    out, ref = out.mean(axis=2), ref[:, :, 0]
                psnrs.append(psnr(out, ref, s, y_rounding=rounding))
                ssims.append(ssim(out, ref, s, y_rounding=rounding))
        finally:
            net.train(was_training)
        return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}


_BUILT: OrderedDict[Any, Task] = OrderedDict()
_KEEP = 4  # tasks a process keeps (the sweep's data under a few seeds); they share the decoded arrays
_BUILDS = {"count": 0}


def task_builds() -> int:
    """How many tasks this process has built (a sweep builds each task once per process)."""
    return _BUILDS["count"]


def build_task(data: DataConfig, seed: int, splits: Mapping[str, Any] | None = None, store: Store | None = None
               ) -> Task:
    """The task of ``data``: from ``splits`` (``{"train": arrays, "val": arrays}``, e.g. from the object store)
    or decoded here (through ``store`` when given). Built once per process for each (data, seed, splits)."""
    if data.task == "sr" and data.val_root is None and data.val_dataset is None and data.dataset in ("paired",
                                                                                                    "hr_folder"):
        raise ValueError(f"SR dataset {data.dataset!r} has no val split: set data.val_root to a benchmark folder in "
                         "the HR + LR_bicubic/X{s} layout (e.g. Set5)")
    if splits is None:
        splits = {split: load_split(data, split, store) for split in ("train", "val")}
    key = (data, seed, splits["train"].key, splits["val"].key)
    if key not in _BUILT:
        _BUILT[key] = TASKS.get(data.task)(data, splits["train"], splits["val"], seed)
        _BUILDS["count"] += 1
        while len(_BUILT) > _KEEP:
            _BUILT.popitem(last=False)
    _BUILT.move_to_end(key)
    return _BUILT[key]
