"""The teacher actors of one teacher: :class:`TeacherActor` (a frozen teacher on its own CPU/GPU share) and
:class:`ActorPool`, which creates a teacher's ``replicas`` actors in a placement group, spreads chunks over them
(a bounded number in flight) and releases them.

The placement group reserves the actors' CPUs/GPUs until they are released: an actor Ray restarts after a failure
gets its place back instead of queueing behind trials that wait for its rows. A chunk is all or nothing: an actor
killed mid-chunk is restarted by Ray and the chunk redone (``max_task_retries=-1``).

An actor's constructor takes no object-store references: it asks the service that made it (its owner, alive as
long as the actor is) for the weights and the data (``TeacherService.sources``), at every start. Ray restarts an
actor with its constructor's arguments, but does not keep the objects they refer to for that (and logs it on the
terminal: ray-project/ray#53727); a name is all the constructor needs.
"""
from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raykd import telemetry
from raykd.config import DataConfig, TeacherServiceConfig
from raykd.data.arrays import ImageArrays, PairArrays
from raykd.data.batches import ClassificationBatches, SRBatches
from raykd.teachers.precision import at_precision, stored_dtype
from raykd.teachers.sources import run_sr_teacher, run_teacher
from raykd.teachers.spec import TeacherSpec

__all__ = ["TeacherActor", "ActorPool", "batches_of"]


def batches_of(arrays: ImageArrays | PairArrays, data: DataConfig, seed: int) -> ClassificationBatches | SRBatches:
    return ClassificationBatches(arrays, data, seed) if data.task == "cls" else SRBatches(arrays, data, seed)


@ray.remote(concurrency_groups={"control": 1})
class TeacherActor:
    """One frozen teacher on its own device (a GPU when the actor was given one), reading the sweep's decoded
    training split from the object store, its outputs rounded to ``precision``. Batches run one at a time;
    :meth:`where` answers at once, beside them."""

    def __init__(self, spec: TeacherSpec, service: str, data: DataConfig, precision: str) -> None:
        """``service``: the name of the teacher service that creates this actor, which hands it the weights' and
        the data's object refs (``TeacherService.sources``; see the module docstring)."""
        self.spec, self.data, self.precision = spec, data, precision
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        weights, arrays = ray.get(ray.get_actor(service).sources.remote(spec.name))
        self.model = spec.build(self.device, ray.get(weights))
        self.arrays = ray.get(arrays)
        self.views: dict[int, ClassificationBatches | SRBatches] = {}

    def __repr__(self) -> str:  # what the Ray dashboard shows for this actor: which teacher it is
        return f"TeacherActor({self.spec.name})"

    def batches(self, seed: int) -> ClassificationBatches | SRBatches:
        if seed not in self.views:
            self.views[seed] = batches_of(self.arrays, self.data, seed)
        return self.views[seed]

    @ray.method(concurrency_group="control")
    def where(self) -> tuple[int, str]:
        """(process id, node id) of this actor."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def compute(self, seed: int, view: int, indices: np.ndarray, outputs: Sequence[str], batch_size: int
                ) -> dict[str, np.ndarray]:
        """Outputs (at ``precision``) for view ``view`` (views of ``seed``) of samples ``indices`` (classification)."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for start in range(0, len(indices), batch_size):
            x = self.batches(seed).batch(indices[start:start + batch_size], view, self.device)["hr"]
            for name, value in run_teacher(self.model, x, outputs).items():
                parts[name].append(at_precision(value, self.precision).cpu().numpy())
        telemetry.teacher_samples_computed(self.spec.name, len(indices))
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def compute_whole(self, images: Sequence[int], outputs: Sequence[str]) -> dict[str, list[np.ndarray]]:
        """Outputs (at ``precision``) on whole LR images (super-resolution)."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for image in images:
            out = run_sr_teacher(self.model, self.batches(0).whole(int(image), self.device), outputs,
                                 self.data.scale, self.data.tile, self.data.tile_overlap)
            for name, value in out.items():
                parts[name].append(at_precision(value[0], self.precision).numpy())
        telemetry.teacher_samples_computed(self.spec.name, len(images))
        return parts

    def row_bytes(self, outputs: Sequence[str]) -> int:
        """Bytes of one stored row of ``outputs`` (a probe forward on sample 0, not counted as computed)."""
        if self.data.task == "cls":
            x = self.batches(0).batch(np.zeros(1, dtype=np.int64), 0, self.device)["hr"]
            out = run_teacher(self.model, x, outputs)
        else:
            out = run_sr_teacher(self.model, self.batches(0).whole(0, self.device), outputs, self.data.scale,
                                 self.data.tile, self.data.tile_overlap)
        return sum(value[0].numel() * stored_dtype(self.precision).itemsize for value in out.values())

    def forward(self, x: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Live mode: outputs (at ``precision``) for a batch a trainer sent."""
        output = "logits" if self.data.task == "cls" else "image"
        out = run_teacher(self.model, torch.from_numpy(x), outputs, output)
        telemetry.teacher_samples_computed(self.spec.name, len(x))
        return {name: at_precision(value, self.precision).cpu().numpy() for name, value in out.items()}


class ActorPool:
    """One teacher's actors: created on first use (:meth:`actors`), chunks sent round robin (:meth:`compute`; at
    most ``2 x replicas`` in flight, one per :attr:`slots`), released by :meth:`release` (a later use creates new
    ones)."""

    def __init__(self, spec: TeacherSpec, weights: Any, data: DataConfig, arrays: list,
                 config: TeacherServiceConfig, group_name: str, service: str) -> None:
        """``weights``, ``arrays``: the refs the service holds (handed to the actors on request, not as
        constructor arguments); ``service``: the service's actor name, which the actors ask for them."""
        self.spec, self.weights, self.data, self.arrays, self.config = spec, weights, data, arrays, config
        self.group_name = group_name  # named, so that a restarted service frees the reservation of the dead one
        self.service = service
        self.handles: list[Any] = []
        self.group: Any = None
        self.lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(2 * config.replicas)
        self.cycle: Any = None
        self._row_bytes: dict[tuple[str, ...], int] = {}

    async def actors(self) -> list:
        async with self.lock:
            if not self.handles:
                await self._create()
        return self.handles

    async def _create(self) -> None:
        cfg = self.config
        bundle = {k: v for k, v in (("CPU", cfg.num_cpus), ("GPU", cfg.num_gpus)) if v > 0}
        if bundle:
            # placement groups live as long as the job, not as the actor that made them: free a dead instance's
            try:
                remove_placement_group(ray.util.get_placement_group(self.group_name))
            except ValueError:
                pass
            self.group = placement_group([bundle] * cfg.replicas, strategy="PACK", name=self.group_name)
            await self.group.ready()
        self.handles = [
            TeacherActor.options(
                num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=4, max_task_retries=-1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=i)
                if self.group is not None else None,
            ).remote(self.spec, self.service, self.data, cfg.precision)
            for i in range(cfg.replicas)]
        self.cycle = itertools.cycle(self.handles)

    def release(self) -> None:
        for actor in self.handles:
            ray.kill(actor, no_restart=True)
        self.handles, self.cycle = [], None
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None

    async def places(self) -> list[tuple[int, str]]:
        """(process id, node id) of each actor (none once released)."""
        return list(await asyncio.gather(*(actor.where.remote() for actor in self.handles)))

    async def row_bytes(self, outputs: Sequence[str]) -> int:
        """Bytes of one stored row of ``outputs`` (one probe forward, asked once: the actors of a finished stream
        are released, so a later ask could meet one being killed)."""
        key = tuple(outputs)
        if key not in self._row_bytes:
            self._row_bytes[key] = await (await self.actors())[0].row_bytes.remote(outputs)
        return self._row_bytes[key]

    async def compute(self, seed: int, view: int | None, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, Any]:
        """The outputs of one chunk of ``rows``: view ``view`` of seed ``seed`` (classification) or whole images
        (``view`` None). The caller holds one of :attr:`slots` while it runs."""
        await self.actors()
        actor = next(self.cycle)
        if view is None:
            return await actor.compute_whole.remote(rows.tolist(), outputs)
        return await actor.compute.remote(seed, view, rows, outputs, self.config.batch_size)
