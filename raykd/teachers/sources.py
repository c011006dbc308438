"""What a training step reads its teacher outputs from: the one small interface the trainer sees.

A source is told when an epoch begins (:meth:`TeacherSource.begin_epoch`: a stored source fetches that epoch's
table, blocking only if the service has not produced it yet, and asks for the next one in the background) and is
asked for a batch's outputs with ``request(batch)``, which returns a function yielding ``{name: tensor}`` on the
batch's device. The trainer requests before its own forward and collects after it, so a teacher in another process
(a live actor) works while the student computes.

* :class:`InProcessTeacher`: a frozen model in the training process (``raykd train``/``distill`` without Ray);
* :class:`StoredTeacher`: rows of the tables the teacher service produces (:mod:`raykd.teachers.service`), by
  sample index; for super-resolution the whole-image rows are cut with each patch's box;
* :class:`raykd.teachers.service.LiveTeacher`: each batch sent to one of the teacher's actors (outputs too
  large to store).

Every source counts what it served: ``teacher_samples_computed`` (rows a teacher ran on for this trainer) and
``cache_hits`` (rows read from stored tables). Every source serves float32 tensors holding values at its
``precision`` (:mod:`raykd.teachers.precision`: what the stored tables hold), so all three give a student the same
numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from raykd.data.batches import to_device
from raykd.data.views import PatchViews
from raykd.models.features import capture
from raykd.models.tiling import super_resolve
from raykd.teachers.precision import DEFAULT_PRECISION, at_precision
from raykd.teachers.store import TeacherTable

__all__ = ["Fetch", "TeacherSource", "Counted", "InProcessTeacher", "StoredTeacher", "run_teacher", "run_sr_teacher"]

Fetch = Callable[[], dict[str, Tensor]]


class TeacherSource(Protocol):
    outputs: tuple[str, ...]
    precision: str

    def begin_epoch(self, epoch: int) -> None: ...

    def request(self, batch: dict[str, Any], count: bool = True) -> Fetch: ...

    def counters(self) -> dict[str, int]: ...


@torch.no_grad()
def run_teacher(model: nn.Module, x: Tensor, outputs: Sequence[str], output: str = "logits") -> dict[str, Tensor]:
    """The frozen teacher's requested outputs for input ``x`` (autocast to half precision and channels-last on
    CUDA), as float32 on ``x``'s device."""
    device = next(model.parameters()).device
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        out = capture(model, x, outputs, output)
    return {name: out[name].float() for name in outputs}


@torch.no_grad()
def run_sr_teacher(model: nn.Module, lr: Tensor, outputs: Sequence[str], scale: int, tile: int = 0,
                   overlap: int = 16) -> dict[str, Tensor]:
    """An SR teacher on a whole LR image ``(1, 3, h, w)``: its ``"image"`` super-resolved whole (or in tiles when
    ``tile`` > 0, :func:`raykd.models.tiling.super_resolve`), other outputs (features) by one untiled forward."""
    device = next(model.parameters()).device
    if tuple(outputs) == ("image",):
        return {"image": super_resolve(model, lr.to(device), scale, tile, overlap, amp=device.type == "cuda")}
    return {k: v.cpu() for k, v in run_teacher(model, lr, outputs, "image").items()}


class Counted:
    def __init__(self) -> None:
        self.samples_computed = 0
        self.hits = 0

    def begin_epoch(self, epoch: int) -> None:
        pass

    def counters(self) -> dict[str, int]:
        return {"teacher_samples_computed": self.samples_computed, "cache_hits": self.hits}


class InProcessTeacher(Counted):
    """Runs a frozen teacher in the training process on the batch's ``input_key`` entry (the HR view for
    classification, the LR patch for super-resolution), its outputs rounded to ``precision`` like the stored
    tables' rows."""

    def __init__(self, model: nn.Module, outputs: Sequence[str], input_key: str = "hr", output: str = "logits",
                 precision: str = DEFAULT_PRECISION):
        super().__init__()
        self.model, self.outputs, self.input_key, self.output = model, tuple(outputs), input_key, output
        self.precision = precision

    def request(self, batch: dict[str, Any], count: bool = True) -> Fetch:
        x = batch[self.input_key]
        out = {name: at_precision(value, self.precision).float()
               for name, value in run_teacher(self.model, x, self.outputs, self.output).items()}
        self.samples_computed += len(x) * count
        return lambda: out


class StoredTeacher(Counted):
    """Serves rows of stored teacher tables. ``table(epoch)`` returns the epoch's :class:`TeacherTable` (blocking
    until it exists) and ``prefetch(epoch)`` asks for one in the background; both come from the teacher service.

    With ``scale`` (super-resolution), rows are whole images: each is cut with the batch's ``box`` at ``scale``
    (or at 1 for outputs at LR resolution, such as a DVMSR body feature) and oriented like the patches."""

    def __init__(self, table: Callable[[int], TeacherTable], outputs: Sequence[str],
                 prefetch: Callable[[int], None] = lambda epoch: None, scale: int | None = None):
        super().__init__()
        self.outputs, self.scale = tuple(outputs), scale
        self._table, self._prefetch = table, prefetch
        self.current: TeacherTable | None = None

    def begin_epoch(self, epoch: int) -> None:
        self.current = self._table(epoch)
        missing = [name for name in self.outputs if name not in self.current.outputs]
        if missing:
            raise KeyError(f"stored teacher outputs lack {missing}; the table holds {list(self.current.outputs)}")
        self._prefetch(epoch + 1)

    def _current(self) -> TeacherTable:
        if self.current is None:
            raise RuntimeError("StoredTeacher: begin_epoch(epoch) must be called before the epoch's first request")
        return self.current

    @property
    def precision(self) -> str:
        """The precision of the rows served: the tables' own (part of their key, so the run's)."""
        return self._current().precision

    def request(self, batch: dict[str, Any], count: bool = True) -> Fetch:
        table = self._current()
        device = batch["label" if self.scale is None else "hr"].device
        index = np.asarray(batch["index"])
        out = {}
        for name, rows in table.lookup(index, self.outputs).items():
            if self.scale is None:
                out[name] = to_device(rows, device)
            else:  # the SR image is at HR resolution; features (DVMSR's "body") at the LR image's
                crops = PatchViews.crop(rows, batch["box"], self.scale if name == "image" else 1, channels_last=False)
                out[name] = PatchViews.orient(to_device(crops.astype(np.float32), device), batch["box"])
        self.hits += len(index) * count
        return lambda: out
