"""The teacher service: one Ray actor per sweep that produces every epoch's teacher outputs, once, ahead of the
trials that read them.

``TeacherService`` (named ``raykd-teachers-<sweep>`` in the dashboard) owns the teacher actors
(:class:`TeacherActor`: frozen teachers, ``replicas`` per teacher, each with its CPU/GPU share) and, per teacher,
produces tables of outputs (:class:`raykd.teachers.store.TeacherTable`) in epoch order:

* classification: epoch ``e``'s table holds the teacher's outputs for view ``e`` of every training sample (the
  fresh crop and flip epoch ``e`` trains on), so students train on fresh views at no per-trial teacher cost;
* super-resolution: one table of whole-image outputs, cut with each patch's box, serves every epoch.

Each table is looked up in the persistent store first (its content key, :func:`table_key`), else computed by the
actors in chunks (a chunk is all or nothing: an actor killed mid-chunk is restarted by Ray and the chunk redone)
and saved; either way it is put in the object store once, where every trial on a node maps the same copy. The
service stays ``ahead`` epochs beyond the epoch the furthest trial trains on: epochs no trial reaches are never
computed, and a trial blocks only when its epoch's table is not ready yet (it prefetches the next one while it
trains). At most ``keep_epochs`` tables are held in the object store; a restarted trial that needs an older one
gets it back from the store. Once the last table any trial can need exists, the actors are released, so their
CPUs/GPUs go to trials.

Outputs too large to store (24 layers of Vim hidden states on CUB, say) are served live: trials send their batch
to the actors (:class:`LiveTeacher`). ``mode="auto"`` picks live when one table would exceed
``live_threshold_bytes``. Either way the actors round every output to the service's ``precision``
(:mod:`raykd.teachers.precision`), so a live student sees what a stored one reads.

The service itself (no CPUs of its own) runs on the driver's node, the head on a cluster, so that losing a spot
worker takes teacher actors or trials with it, never the service.

Progress is printed by the service (rows done, rows/s, ETA), and counted in the dashboard as
``ray_raykd_teacher_samples_computed_total{teacher}``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from raykd import telemetry
from raykd.config import DataConfig, TeacherServiceConfig
from raykd.data.arrays import ImageArrays, PairArrays
from raykd.data.batches import ClassificationBatches, SRBatches
from raykd.data.store import Store
from raykd.teachers.precision import at_precision, stored_dtype
from raykd.teachers.sources import Counted, Fetch, StoredTeacher, TeacherSource, run_sr_teacher, run_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable, table_key

__all__ = ["TeacherRequest", "TeacherActor", "TeacherService", "LiveTeacher", "ServiceClient", "start_service",
           "stop_service"]

CHUNK_ROWS = 1024  # rows per actor task: small enough that a killed actor loses little, large enough to batch


@dataclass(frozen=True)
class TeacherRequest:
    """A teacher and the outputs the sweep's methods need from it."""

    spec: TeacherSpec
    outputs: tuple[str, ...]
    weights: Any = None  # ObjectRef of the weights' safetensors bytes, put by the driver (start_service sets it)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batches(arrays: ImageArrays | PairArrays, data: DataConfig, seed: int) -> ClassificationBatches | SRBatches:
    return ClassificationBatches(arrays, data, seed) if data.task == "cls" else SRBatches(arrays, data, seed)


@ray.remote(concurrency_groups={"control": 1})
class TeacherActor:
    """One frozen teacher on its own device (a GPU when the actor was given one), reading the sweep's decoded
    training split from the object store, its outputs rounded to ``precision``. Batches run one at a time;
    :meth:`where` answers at once, beside them."""

    def __init__(self, spec: TeacherSpec, weights: bytes, data: DataConfig, arrays: list, precision: str) -> None:
        self.spec, self.data, self.precision = spec, data, precision
        self.device = _device()
        self.model = spec.build(self.device, weights)
        self.arrays = ray.get(arrays[0])
        self.views: dict[int, ClassificationBatches | SRBatches] = {}

    def __repr__(self) -> str:  # what the Ray dashboard shows for this actor: which teacher it is
        return f"TeacherActor({self.spec.name})"

    def batches(self, seed: int) -> ClassificationBatches | SRBatches:
        if seed not in self.views:
            self.views[seed] = _batches(self.arrays, self.data, seed)
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


class _Progress:
    """A line every ``every`` seconds while a table is computed: rows done, rows/s, ETA."""

    def __init__(self, label: str, total: int, every: float = 10.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.started = self.last = time.perf_counter()
        self.done = 0

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(f"{self.label}: {self.done}/{self.total} rows, {rate:.0f} rows/s, ETA {eta:.0f} s", flush=True)
            self.last = now


@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=-1)
class TeacherService:
    """See the module docstring. Built by :func:`start_service`; trials reach it through :class:`ServiceClient`.

    Tables are produced per *stream*, a (teacher, seed) pair: views are drawn from the run's seed, so the runs of a
    seeds stage read their own streams, each made once for all the methods that share the teacher."""

    def __init__(self, requests: list[TeacherRequest], data: DataConfig, split: Any, arrays: list, epochs: int,
                 config: TeacherServiceConfig, store_root: str) -> None:
        """``split``: the decoded training split (Ray resolves it before the constructor runs: an async actor must
        not block in ``ray.get``); ``arrays``: ``[its ObjectRef]``, handed on to the teacher actors."""
        self.requests = {r.spec.name: r for r in sorted(requests, key=lambda r: r.spec.name)}
        self.data, self.arrays, self.epochs, self.config = data, arrays, epochs, config
        self.store = Store(store_root)
        self.split = split
        self.num_rows = len(self.split)
        self.actors: dict[str, list[Any]] = {}
        self.groups: dict[str, Any] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.modes: dict[str, str] = {}
        self.row_bytes: dict[str, int] = {}
        self.frontier: dict[tuple[str, int], int] = {}
        self.wakeup: dict[tuple[str, int], asyncio.Event] = {}
        self.ready: dict[tuple[str, int, int | None], Any] = {}
        self.pending: dict[tuple[str, int, int | None], asyncio.Future] = {}
        self.producers: dict[tuple[str, int], asyncio.Task] = {}
        self.produced_at: dict[tuple[str, int, int | None], float] = {}
        self.stats = self._counters_before_restart() or {
            name: {"samples_computed": 0, "tables_built": 0, "tables_loaded": 0, "table_bytes": 0}
            for name in self.requests}

    # ------------------------------------------------------------------------------------------- counters

    def _counters_key(self) -> bytes:
        return f"raykd-teacher-counters-{ray.get_runtime_context().get_actor_name()}".encode()

    def _counters_before_restart(self) -> dict[str, dict[str, int]] | None:
        """The counters the instance Ray restarted this one from had reached (kept in the cluster's key-value
        store, which outlives the actor): rows a dead instance computed were computed. None on a first start."""
        from ray.experimental.internal_kv import _internal_kv_get

        with warnings.catch_warnings():  # Ray 2.60's property reads its own deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            if not ray.get_runtime_context().was_current_actor_reconstructed:
                return None
        saved = _internal_kv_get(self._counters_key())
        return json.loads(saved) if saved else None

    def _count(self, teacher: str, **add: int) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        for name, value in add.items():
            self.stats[teacher][name] += value
        _internal_kv_put(self._counters_key(), json.dumps(self.stats).encode(), overwrite=True)

    # ------------------------------------------------------------------------------------------- trials

    async def start(self, seeds: Sequence[int]) -> dict[str, str]:
        """Decide every teacher's mode, reserve its actors' resources and start producing the first ``ahead``
        epochs of each seed's stream while the trials start up; returns the modes. The driver calls it before
        trials ask for resources, so teachers never wait behind trials that wait for teachers."""
        modes = {name: await self.mode(name) for name in self.requests}
        for name, mode in modes.items():
            await self._actors(name)
            if mode == "stored":
                for seed in seeds:
                    self._stream(name, seed)
        return modes

    async def mode(self, teacher: str) -> str:
        """``"stored"`` or ``"live"`` for ``teacher`` (decided once, on first use)."""
        if teacher not in self.requests:
            raise KeyError(f"teacher service has no teacher {teacher!r}; it serves {sorted(self.requests)}")
        if teacher not in self.modes:
            mode = self.config.mode
            if mode == "auto":
                per_row = await self._row_bytes(teacher)
                mode = "live" if per_row * self.num_rows > self.config.live_threshold_bytes else "stored"
            self.modes[teacher] = mode
        return self.modes[teacher]

    async def projection(self, seeds: Sequence[int]) -> dict[str, dict[str, int]]:
        """Per stored teacher, what the streams of ``seeds`` will still write: ``{"tables", "table_bytes"}`` (tables
        not yet in the store; bytes of one, from a probe row, so about for whole SR images of varied size), for the
        driver to check against the free disk before any table is made."""
        out = {}
        for name in self.requests:
            if await self.mode(name) != "stored":
                continue
            per_row = await self._row_bytes(name)
            views = sorted({self._view(epoch) for epoch in range(self.epochs)}, key=str)
            missing = [(seed, view) for seed in seeds for view in views
                       if self.store.fs.get_file_info(self.store.path(self._key(name, seed, view))).type
                       == pafs.FileType.NotFound]
            out[name] = {"tables": len(missing), "table_bytes": per_row * self.num_rows}
        return out

    async def _row_bytes(self, teacher: str) -> int:
        """Bytes of one stored row of ``teacher`` (one probe forward, asked once: the actors of a finished stream
        are released, so a later ask could meet one being killed)."""
        if teacher not in self.row_bytes:
            actor = (await self._actors(teacher))[0]
            self.row_bytes[teacher] = await actor.row_bytes.remote(self.requests[teacher].outputs)
        return self.row_bytes[teacher]

    async def describe(self, teacher: str) -> tuple[str, int, str]:
        """``(mode, epochs, precision)`` of ``teacher``."""
        return await self.mode(teacher), self.epochs, self.config.precision

    async def table(self, teacher: str, seed: int, epoch: int, training: bool = True) -> list:
        """``[ObjectRef]`` of the table epoch ``epoch`` (0-based) of a run with ``seed`` reads, once it exists.
        ``training``: the caller trains on that epoch now (the service then produces up to ``ahead`` epochs beyond
        it); a prefetch passes ``False``."""
        if await self.mode(teacher) != "stored":
            raise RuntimeError(f"teacher {teacher!r} is served live; ask for its actors instead")
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch {epoch} is outside this sweep's {self.epochs} epochs")
        stream = self._stream(teacher, seed)
        if training and epoch + self.config.ahead > self.frontier[stream]:
            self.frontier[stream] = min(epoch + self.config.ahead, self.epochs - 1)
            self.wakeup[stream].set()
        return [await self._ensure(teacher, seed, self._view(epoch))]

    async def live_actors(self, teacher: str) -> list:
        if await self.mode(teacher) != "live":
            raise RuntimeError(f"teacher {teacher!r} is served from stored tables; ask for tables instead")
        return await self._actors(teacher)

    def statistics(self) -> dict[str, dict[str, int]]:
        return {name: dict(stats) for name, stats in self.stats.items()}

    def produced(self, teacher: str) -> dict[tuple[int, int | None], float]:
        """When (``time.time()``) each table of ``teacher`` came to exist in this service, by (seed, view)."""
        return {(seed, view): t for (name, seed, view), t in self.produced_at.items() if name == teacher}

    async def actor_pids(self, teacher: str) -> list[int]:
        """Process ids of ``teacher``'s actors (fault tests kill them), answered while they compute."""
        return [pid for pid, _ in await self.actor_places(teacher)]

    async def actor_places(self, teacher: str) -> list[tuple[int, str]]:
        """(process id, node id) of each of ``teacher``'s actors."""
        return list(await asyncio.gather(*(actor.where.remote() for actor in self.actors.get(teacher, []))))

    def shutdown(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        for task in self.producers.values():
            task.cancel()
        for name in list(self.actors):
            self._release(name)
        _internal_kv_del(self._counters_key())

    # ------------------------------------------------------------------------------------------ internals

    def _view(self, epoch: int) -> int | None:
        return None if self.data.task == "sr" else self.data.view_for_epoch(epoch)

    def _stream(self, teacher: str, seed: int) -> tuple[str, int]:
        stream = (teacher, seed)
        if stream not in self.producers:
            self.frontier[stream] = min(self.config.ahead, self.epochs - 1)
            self.wakeup[stream] = asyncio.Event()
            self.producers[stream] = asyncio.get_running_loop().create_task(self._produce(teacher, seed))
        return stream

    async def _actors(self, teacher: str) -> list:
        """The teacher's actors, created on first use in a placement group that reserves their CPUs/GPUs until
        they are released: an actor Ray restarts after a failure gets its place back instead of queueing behind
        trials that are waiting for its tables."""
        async with self.locks.setdefault(teacher, asyncio.Lock()):
            if teacher not in self.actors:
                await self._create_actors(teacher)
        return self.actors[teacher]

    async def _create_actors(self, teacher: str) -> None:
        request = self.requests[teacher]
        cfg = self.config
        bundle = {k: v for k, v in (("CPU", cfg.num_cpus), ("GPU", cfg.num_gpus)) if v > 0}
        group = None
        if bundle:
            # named after the service, so that an instance Ray restarted after a crash frees the reservation of the
            # one that died (placement groups live as long as the job, not as the actor that made them)
            name = f"{ray.get_runtime_context().get_actor_name() or 'raykd-teachers'}/{teacher}"
            try:
                remove_placement_group(ray.util.get_placement_group(name))
            except ValueError:
                pass
            group = placement_group([bundle] * cfg.replicas, strategy="PACK", name=name)
        if group is not None:
            self.groups[teacher] = group
            await group.ready()
        self.actors[teacher] = [
            TeacherActor.options(
                num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=4, max_task_retries=-1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
                if group is not None else None,
            ).remote(request.spec, request.weights, self.data, self.arrays, cfg.precision)
            for i in range(cfg.replicas)]

    def _release(self, teacher: str) -> None:
        for actor in self.actors.pop(teacher, []):
            ray.kill(actor, no_restart=True)
        group = self.groups.pop(teacher, None)
        if group is not None:
            remove_placement_group(group)

    async def _produce(self, teacher: str, seed: int) -> None:
        """Make the tables of epochs 0, 1, ... of a stream as its frontier allows; once every stream has made its
        last table, release the teacher's actors (a new stream gets new ones)."""
        stream = (teacher, seed)
        for epoch in range(self.epochs):
            while epoch > self.frontier[stream]:
                self.wakeup[stream].clear()
                await self.wakeup[stream].wait()
            await self._ensure(teacher, seed, self._view(epoch))
        if all(task.done() or task is asyncio.current_task()
               for (name, _), task in self.producers.items() if name == teacher):
            self._release(teacher)

    async def _ensure(self, teacher: str, seed: int, view: int | None) -> Any:
        if view is None:  # a whole-image (SR) table does not depend on the seed: one copy serves every stream
            seed = 0
        key = (teacher, seed, view)
        if key in self.ready:
            return self.ready[key]
        if key not in self.pending:
            self.pending[key] = asyncio.get_running_loop().create_task(self._make(teacher, seed, view))
        try:
            return await asyncio.shield(self.pending[key])
        finally:
            self.pending.pop(key, None)

    def _key(self, teacher: str, seed: int, view: int | None) -> str:
        request = self.requests[teacher]
        inputs = _batches(self.split, self.data, seed).describe()
        if self.data.task == "sr":
            inputs.update(tile=self.data.tile, tile_overlap=self.data.tile_overlap)
        return table_key(request.spec.identity(), inputs, request.outputs, view, self._top_k(), self.config.precision)

    async def _make(self, teacher: str, seed: int, view: int | None) -> Any:
        key = self._key(teacher, seed, view)
        table = await asyncio.to_thread(self.store.load, key)
        if table is not None:
            found = TeacherTable(table)
            self._count(teacher, tables_loaded=1)
        else:
            outputs = await self._compute(teacher, seed, view)
            meta = {"teacher": teacher, "seed": seed, "view": view}
            found = await asyncio.to_thread(TeacherTable.save, self.store, key, np.arange(self.num_rows), outputs,
                                            meta, self._top_k(), self.config.precision)
            self._count(teacher, tables_built=1)
        self.stats[teacher]["table_bytes"] = found.nbytes
        telemetry.cache_bytes(teacher, found.nbytes)
        ref = ray.put(found)
        self.ready[(teacher, seed, view)] = ref
        self.produced_at.setdefault((teacher, seed, view), time.time())
        self._evict(teacher)
        return ref

    def _top_k(self) -> int | None:
        return self.config.top_k if self.data.task == "cls" else None

    def _evict(self, teacher: str) -> None:
        held = [key for key in self.ready if key[0] == teacher]
        for key in held[:max(0, len(held) - self.config.keep_epochs)]:
            del self.ready[key]

    async def _compute(self, teacher: str, seed: int, view: int | None) -> dict[str, Any]:
        """Every row of one table, in chunks spread over the teacher's actors (a bounded number in flight)."""
        outputs = self.requests[teacher].outputs
        actors = await self._actors(teacher)
        chunks = np.array_split(np.arange(self.num_rows), math.ceil(self.num_rows / CHUNK_ROWS))
        label = f"teacher {teacher}" + (f", seed {seed}, view {view}" if view is not None else ", whole images")
        progress = _Progress(label, self.num_rows)
        slots = asyncio.Semaphore(2 * len(actors))
        cycle = itertools.cycle(actors)

        async def run(chunk: np.ndarray) -> dict[str, Any]:
            async with slots:
                actor = next(cycle)
                if view is None:
                    result = await actor.compute_whole.remote(chunk.tolist(), outputs)
                else:
                    result = await actor.compute.remote(seed, view, chunk, outputs, self.config.batch_size)
                progress.add(len(chunk))
                self._count(teacher, samples_computed=len(chunk))  # as they come: a restart keeps what was done
                return result

        parts = await asyncio.gather(*(run(chunk) for chunk in chunks))
        if view is None:
            return {name: [row for part in parts for row in part[name]] for name in outputs}
        return {name: np.concatenate([part[name] for part in parts]) for name in outputs}


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


class ServiceClient:
    """What a trial holds: the service's handle and the teacher it reads; :meth:`source` builds the trainer's
    source (stored tables with prefetch, or live actors)."""

    def __init__(self, service: Any, teacher: str, outputs: Sequence[str]) -> None:
        self.service, self.teacher, self.outputs = service, teacher, tuple(outputs)

    def source(self, task: str, scale: int, seed: int) -> TeacherSource:
        mode, epochs, precision = ray.get(self.service.describe.remote(self.teacher))
        if mode == "live":
            return LiveTeacher(ray.get(self.service.live_actors.remote(self.teacher)), self.outputs,
                               "hr" if task == "cls" else "lr", precision)

        def prefetch(epoch: int) -> None:
            if epoch < epochs:  # fire and forget: the service makes the table while this epoch trains
                self.service.table.remote(self.teacher, seed, epoch, False)

        def table(epoch: int) -> TeacherTable:
            return ray.get(ray.get(self.service.table.remote(self.teacher, seed, epoch, True))[0])

        return StoredTeacher(table, self.outputs, prefetch, scale if task == "sr" else None)


def start_service(requests: list[TeacherRequest], data: DataConfig, arrays_ref: Any, epochs: int,
                  config: TeacherServiceConfig, store_root: str, name: str) -> Any:
    """The sweep's teacher service, named ``raykd-teachers-<name>`` (replacing a stale one of that name).

    The teachers' weights are read here, in the driver, and travel through the object store (their sha256 with
    the spec), so the service and its actors may run on nodes that do not have the checkpoint files."""
    for request in requests:
        request.spec.weights_sha256  # cached on the spec, which is pickled with it
    requests = [dataclasses.replace(r, weights=ray.put(r.spec.weights_bytes())) for r in requests]
    actor_name = f"raykd-teachers-{name}"
    try:
        ray.kill(ray.get_actor(actor_name), no_restart=True)
    except ValueError:
        pass
    # pinned to the driver's node (if that node goes, so does the driver); a soft affinity was measured to pass over
    # a head without CPUs even for this 0-CPU actor
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    service = TeacherService.options(name=actor_name, scheduling_strategy=here).remote(
        requests, data, arrays_ref, [arrays_ref], epochs, config, store_root)
    # Ray restarts a dead service with the same arguments, but objects they only refer to are freed once the first
    # instance (their borrower) is gone: the driver keeps them (and the caller the data) until stop_service
    _PINNED[service._actor_id.hex()] = [r.weights for r in requests]
    return service


_PINNED: dict[str, list] = {}  # actor id -> object refs a restarted TeacherService needs


def stop_service(service: Any) -> None:
    """Stop a service of :func:`start_service`: its producers, actors and placement groups, and what it pinned."""
    try:
        ray.get(service.shutdown.remote())
    finally:
        ray.kill(service, no_restart=True)
        _PINNED.pop(service._actor_id.hex(), None)
