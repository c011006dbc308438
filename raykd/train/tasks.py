"""What differs between classification and super-resolution training, behind one small interface.

The training loop, the teacher actors and the sweep only talk to a :class:`Task`: its training set (items are
dicts with at least ``index`` and ``view``), which batch entries are the student's input and the target, how
the teacher's outputs for a (sample, view) are computed and served from the cache, and how a model is
evaluated. ``build_task(cfg)`` picks the task by ``cfg.task``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from raykd.data.classification import open_dataset
from raykd.data.views import LowResolution, ViewDataset, ViewPlan
from raykd.teachers.cache import CacheEntry
from raykd.teachers.sources import CachedTeacher, run_teacher
from raykd.train.config import TrainConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Task:
    """Base of the training tasks. Subclasses set ``train`` (a Dataset with ``set_epoch``), ``fingerprint``,
    ``num_views`` and the class attributes."""

    name: ClassVar[str]
    metric: ClassVar[str]  # reported every epoch and maximised by sweeps
    target_key: ClassVar[str]
    teacher_input_key: ClassVar[str]  # the batch entry a live teacher runs on
    train: Dataset
    fingerprint: str
    num_views: int
    teacher_rows: int  # (sample, view) rows a full pass of the teacher computes

    def __init__(self, cfg: TrainConfig, student_input: str = "hr"):
        self.cfg = cfg
        self.input_key = student_input

    def model_kwargs(self) -> dict[str, Any]:
        """What the task fixes about the model (number of classes, SR scale)."""
        raise NotImplementedError

    def teacher_inputs(self) -> dict[str, Any]:
        """Everything about the teacher's input besides the dataset files, for cache keys."""
        raise NotImplementedError

    def teacher_batches(self, indices: Sequence[int], batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches of every view of ``indices`` as the teacher sees them: dicts with ``index``, ``view`` and
        ``input``."""
        raise NotImplementedError

    def teacher_forward(self, model: nn.Module, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        return run_teacher(model, x, outputs)

    def cached_teacher(self, entry: CacheEntry, outputs: Sequence[str]):
        """The trainer-side source serving this task's batches from a cache entry."""
        return CachedTeacher(entry, outputs)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        raise NotImplementedError


def view_plan(cfg: TrainConfig) -> ViewPlan:
    """The replayable augmentation of the training set: K views per sample (epoch e uses view e mod K)."""
    return ViewPlan(seed=cfg.seed, num_views=cfg.num_views, crop=cfg.image_size, padding=cfg.crop_padding,
                    flip=cfg.flip)


class ClassificationTask(Task):
    """Image classification, optionally with a low-resolution student input (DFD, ViMD)."""

    name = "cls"
    metric = "val_top1"
    target_key = "label"
    teacher_input_key = "hr"

    def __init__(self, cfg: TrainConfig, student_input: str = "hr"):
        super().__init__(cfg, student_input)
        train_base = open_dataset(cfg.data, cfg.data_root, "train")
        val_base = open_dataset(cfg.data, cfg.data_root, "val")
        if cfg.check_data:  # every image opened first: a broken file stops the run before training starts
            for base in (train_base, val_base):
                base.check()
        if list(val_base.classes) != list(train_base.classes):
            raise ValueError(f"{cfg.data} at {cfg.data_root}: val classes differ from train classes")
        lowres = LowResolution(cfg.lr_factor, cfg.lr_mode) if student_input == "lr" else None
        self.train = ViewDataset(train_base, view_plan(cfg), cfg.image_size, IMAGENET_MEAN, IMAGENET_STD, lr=lowres)
        self.val = ViewDataset(val_base, ViewPlan(), cfg.image_size, IMAGENET_MEAN, IMAGENET_STD, lr=lowres)
        self.num_classes = len(train_base.classes)
        self.fingerprint = train_base.fingerprint()
        self.num_views = cfg.num_views
        self.teacher_rows = len(self.train) * self.num_views

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def teacher_inputs(self) -> dict[str, Any]:
        return {"plan": self.train.plan.to_dict(), "image_size": self.cfg.image_size, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD)}

    def teacher_batches(self, indices: Sequence[int], batch_size: int) -> Iterator[dict[str, Any]]:
        for k in range(self.num_views):
            for start in range(0, len(indices), batch_size):
                batch = default_collate([self.train.get(i, k) for i in indices[start:start + batch_size]])
                yield {"index": batch["index"].numpy(), "view": batch["view"].numpy(), "input": batch["hr"]}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) and mean cross-entropy on the val split."""
        loader = DataLoader(self.val, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers)
        was_training = model.training
        model.eval()
        correct1 = correct5 = total = 0
        loss_sum = 0.0
        for batch in loader:
            x = batch[self.input_key].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(dim=1).sum().item()
            total += y.numel()
        model.train(was_training)
        return {"val_top1": 100.0 * correct1 / total, "val_top5": 100.0 * correct5 / total,
                "val_loss": loss_sum / total}


TASKS: dict[str, type[Task]] = {"cls": ClassificationTask}


def build_task(cfg: TrainConfig, student_input: str = "hr") -> Task:
    """The task ``cfg.task`` names, with its data built for a student that sees ``student_input``."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}: expected one of {sorted(TASKS)}")
    if student_input not in ("hr", "lr"):
        raise ValueError(f"student_input {student_input!r}: expected 'hr' or 'lr'")
    return TASKS[cfg.task](cfg, student_input)


# SR lives in its own module, which subclasses Task and adds itself to TASKS; imported last so that either module
# can be imported first.
import raykd.train.sr_task  # noqa: E402,F401
