"""How a teacher service serves a teacher to trials: one small object per mode, built by the service
(:meth:`TeacherService.serving`) and sent to the trial, where :meth:`source` builds the trial's
:class:`~raykd.teachers.sources.TeacherSource`; :class:`~raykd.teachers.service.ServiceClient` does not look at
which mode it got. A new mode is a new class with that method.

* :class:`StoredMode`: rows of the tables the service's streams make (:mod:`raykd.teachers.stream`): streamed in
  chunks when the trial says which rows it reads (``reads(epoch)``), else whole tables;
* :class:`LiveMode`: each batch sent to the teacher's actors (:class:`LiveTeacher`).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from raykd.teachers.sources import ChunkedTable, Counted, Fetch, StoredTeacher, TeacherSource
from raykd.teachers.store import TeacherTable

__all__ = ["Reads", "StoredMode", "LiveMode", "LiveTeacher"]

Reads = Callable[[int], np.ndarray]  # epoch -> the sample indices a trial's steps read then, in step order


class LiveTeacher(Counted):
    """Each batch goes to one of a teacher's actors (round robin) while the student computes; the actors answer
    at the service's ``precision``."""

    def __init__(self, actors: Sequence[Any], outputs: Sequence[str], input_key: str, precision: str):
        super().__init__()
        self.outputs, self.input_key, self.precision = tuple(outputs), input_key, precision
        self._actors = itertools.cycle(actors)

    def request(self, batch: dict[str, Any], count: bool = True) -> Fetch:
        x = batch[self.input_key]
        ref = next(self._actors).forward.remote(x.detach().cpu().numpy(), self.outputs)
        self.samples_computed += len(x) * count
        device = x.device
        # arrays from the object store are read-only; copy them to the batch's device, widened (exactly) to float32
        return lambda: {name: torch.tensor(value, dtype=torch.float32, device=device)
                        for name, value in ray.get(ref).items()}


@dataclass(frozen=True)
class LiveMode:
    actors: tuple[Any, ...]
    precision: str

    def source(self, service: Any, teacher: str, outputs: Sequence[str], task: str, scale: int, seed: int,
               reads: Reads | None = None) -> TeacherSource:
        return LiveTeacher(self.actors, outputs, "hr" if task == "cls" else "lr", self.precision)


@dataclass(frozen=True)
class StoredMode:
    """``ahead``: epochs beyond the one a trial trains that it asks the service for in the background."""

    epochs: int
    precision: str
    ahead: int

    def source(self, service: Any, teacher: str, outputs: Sequence[str], task: str, scale: int, seed: int,
               reads: Reads | None = None) -> TeacherSource:
        if reads is None or task == "sr":  # whole-image SR rows are read in any order: a whole table
            def prefetch(epoch: int) -> None:
                if epoch < self.epochs:  # fire and forget: the service makes the table while this epoch trains
                    service.table.remote(teacher, seed, epoch, False)

            def table(epoch: int) -> TeacherTable:
                return ray.get(ray.get(service.table.remote(teacher, seed, epoch, True))[0])

            return StoredTeacher(table, outputs, prefetch, scale if task == "sr" else None)

        def register(epoch: int) -> Any:
            return service.register.remote(teacher, seed, epoch, reads(epoch))

        def ahead(epoch: int) -> None:  # epochs epoch .. epoch + ahead - 1 planned while this one trains
            for later in range(epoch, min(epoch + self.ahead, self.epochs)):
                register(later)

        def streamed(epoch: int) -> ChunkedTable:
            def piece(position: int) -> tuple[int, int, TeacherTable] | None:
                found = ray.get(service.piece.remote(teacher, seed, epoch, position))
                return None if found is None else (found[0], found[1], ray.get(found[2][0]))

            def extra(rows: np.ndarray) -> TeacherTable:
                return ray.get(ray.get(service.rows.remote(teacher, seed, epoch, rows))[0])

            return ChunkedTable(ray.get(register(epoch)), piece, lambda: ray.get(register(epoch)), extra, outputs,
                                self.precision)

        return StoredTeacher(streamed, outputs, ahead)
