"""What a training step reads its teacher outputs from: the one small interface the trainer sees.

A source is told when an epoch begins (:meth:`TeacherSource.begin_epoch`: a stored source fetches that epoch's
table, blocking only if the service has not produced it yet, and asks for the next one in the background) and is
asked for a batch's outputs with ``request(batch)``, which returns a function yielding ``{name: tensor}`` on the
batch's device. The trainer requests before its own forward and collects after it, so a teacher in another process
(a live actor) works while the student computes.

* :class:`InProcessTeacher`: a frozen model in the training process (``raykd train``/``distill`` without Ray);
* :class:`StoredTeacher`: rows of the tables the teacher service produces (:mod:`raykd.teachers.service`), by
  sample index, from a whole table or from one the service streams in chunks (:class:`ChunkedTable`: a step waits
  only for the chunk holding its batch); for super-resolution the whole-image rows are cut with each patch's box;
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

__all__ = ["Fetch", "TeacherSource", "Counted", "InProcessTeacher", "StoredTeacher", "ChunkedTable", "run_teacher",
           "run_sr_teacher"]

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


PieceOf = Callable[[int], "tuple[int, int, TeacherTable] | None"]


class ChunkedTable:
    """An epoch's table as the teacher service streams it: its *plan* (the sample indices in the order the service
    computes them, the order trials read them) and its pieces, each fetched when a lookup first needs a row of it:
    ``piece(position)`` returns ``(start, stop, table)`` of the piece holding plan position ``position``, blocking
    until it exists, or None when the service no longer knows the plan (it was restarted: then ``replan()``
    registers the epoch's reads again and returns the new plan). Rows beyond the plan (the trainer's shape probe,
    say) come from ``extra(rows)``, a table the service computes for them at once."""

    def __init__(self, plan: np.ndarray, piece: PieceOf, replan: Callable[[], np.ndarray],
                 extra: Callable[[np.ndarray], TeacherTable], outputs: Sequence[str], precision: str) -> None:
        self.outputs, self.precision = tuple(outputs), precision
        self._piece, self._replan, self._extra = piece, replan, extra
        self.pieces: list[tuple[int, int, TeacherTable]] = []
        self._plan(plan)

    def _plan(self, plan: np.ndarray) -> None:
        self.position = np.full(int(plan.max()) + 1 if len(plan) else 0, -1, dtype=np.int64)
        self.position[plan] = np.arange(len(plan))

    def positions(self, index: np.ndarray) -> np.ndarray:
        """Plan positions of samples ``index`` (-1 for samples the plan does not hold)."""
        known = index < len(self.position)
        return np.where(known, self.position[np.where(known, index, 0)], -1) if len(self.position) else index * 0 - 1

    def _tables(self, index: np.ndarray) -> list[tuple[np.ndarray, TeacherTable]]:
        """``(where, table)`` pairs: the pieces (fetched when missing) holding ``index[where]``, and a table of the
        rows beyond the plan."""
        pos = self.positions(index)
        owner = np.full(len(index), -1, dtype=np.int64)
        for k, (start, stop, _) in enumerate(self.pieces):
            owner[(pos >= start) & (pos < stop)] = k
        while ((owner < 0) & (pos >= 0)).any():
            found = self._piece(int(pos[(owner < 0) & (pos >= 0)][0]))
            if found is None:  # a restarted service: plan again (its positions may differ), forget the pieces
                self.pieces = []
                self._plan(self._replan())
                return self._tables(index)
            self.pieces.append(found)
            owner[(owner < 0) & (pos >= found[0]) & (pos < found[1])] = len(self.pieces) - 1
        parts = [(np.flatnonzero(owner == k), self.pieces[k][2]) for k in np.unique(owner[owner >= 0])]
        if (pos < 0).any():
            parts.append((np.flatnonzero(pos < 0), self._extra(index[pos < 0])))
        return parts

    def lookup(self, index: np.ndarray, names: Sequence[str] | None = None) -> dict[str, Any]:
        index = np.asarray(index, dtype=np.int64)
        parts = self._tables(index)
        if len(parts) == 1:
            return parts[0][1].lookup(index, names)
        where = np.concatenate([at for at, _ in parts])
        back = np.argsort(where, kind="stable")
        found = [table.lookup(index[at], names) for at, table in parts]
        out: dict[str, Any] = {}
        for name in found[0]:
            if isinstance(found[0][name], list):
                rows = [row for part in found for row in part[name]]
                out[name] = [rows[i] for i in back]
            else:
                out[name] = np.concatenate([part[name] for part in found])[back]
        return out


class StoredTeacher(Counted):
    """Serves rows of stored teacher tables. ``table(epoch)`` returns the epoch's :class:`TeacherTable` (blocking
    until it exists) or :class:`ChunkedTable` (streamed: a request blocks only until its rows' chunk exists), and
    ``prefetch(epoch)`` asks for one in the background; both come from the teacher service.

    With ``scale`` (super-resolution), rows are whole images: each is cut with the batch's ``box`` at ``scale``
    (or at 1 for outputs at LR resolution, such as a DVMSR body feature) and oriented like the patches."""

    def __init__(self, table: Callable[[int], TeacherTable | ChunkedTable], outputs: Sequence[str],
                 prefetch: Callable[[int], None] = lambda epoch: None, scale: int | None = None):
        super().__init__()
        self.outputs, self.scale = tuple(outputs), scale
        self._table, self._prefetch = table, prefetch
        self.current: TeacherTable | ChunkedTable | None = None

    def begin_epoch(self, epoch: int) -> None:
        self.current = self._table(epoch)
        missing = [name for name in self.outputs if name not in self.current.outputs]
        if missing:
            raise KeyError(f"stored teacher outputs lack {missing}; the table holds {list(self.current.outputs)}")
        self._prefetch(epoch + 1)

    def _current(self) -> TeacherTable | ChunkedTable:
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
