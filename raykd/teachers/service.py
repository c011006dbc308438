"""The teacher service: one Ray actor per sweep that produces every epoch's teacher outputs, once, ahead of the
trials that read them.

``TeacherService`` (named ``raykd-teachers-<sweep>`` in the dashboard) owns the teacher actors
(:class:`TeacherActor`: frozen teachers, ``replicas`` per teacher, each with its CPU/GPU share) and, per teacher,
produces tables of outputs (:class:`raykd.teachers.store.TeacherTable`) in epoch order:

* classification: epoch ``e``'s table holds the teacher's outputs for view ``e`` of every training sample (the
  fresh crop and flip epoch ``e`` trains on), so students train on fresh views at no per-trial teacher cost;
* super-resolution: one table of whole-image outputs, cut with each patch's box, serves every epoch.

The service is a thin coordinator of small objects: an :class:`~raykd.teachers.pool.ActorPool` per teacher (its
actors, their placement group, restarts), a :class:`~raykd.teachers.stream.Stream` per (teacher, seed) that owns
its schedule and tables, a :class:`~raykd.teachers.cache.TableCache` (object-store copies and their eviction),
:class:`~raykd.teachers.counters.Counters`, and per teacher a serving mode (:mod:`raykd.teachers.modes`).

Trials register the rows each epoch's steps read (``--steps-per-epoch`` caps them; trials of one seed share the
epoch's permutation), and the stream computes those rows in that order, in chunks spread over the actors (a chunk
is all or nothing: an actor killed mid-chunk is restarted by Ray and the chunk redone), each published as soon as
it exists: a trial's step waits only for the chunk holding its batch, and rows no trial reads are never computed.
A trial registers ``ahead`` epochs beyond the one it trains, so epochs no trial reaches are never computed. A
finished table is saved in the persistent store (its content key, :func:`table_key`) and reused by later runs,
which look it up before computing; it is put in the object store once, where every trial on a node maps the same
copy. At most ``keep_epochs`` tables are held there; a restarted trial that needs an older one gets it back from
the store. Once every epoch's table exists, the actors are released, so their CPUs/GPUs go to trials.

Outputs too large to store (24 layers of Vim hidden states on CUB, say) are served live: trials send their batch
to the actors (:class:`LiveTeacher`). ``mode="auto"`` picks live when one table would exceed
``live_threshold_bytes``. Either way the actors round every output to the service's ``precision``
(:mod:`raykd.teachers.precision`), so a live student sees what a stored one reads.

The service itself (no CPUs of its own) runs on the driver's node, the head on a cluster, so that losing a spot
worker takes teacher actors or trials with it, never the service.

No restartable actor here takes object-store references as constructor arguments: Ray restarts an actor with the
same arguments but does not keep the objects they refer to for that (and logs so on the terminal,
ray-project/ray#53727). The teachers' weights and the data reach the service from a holder the driver made
(:class:`_Sources`, never restarted), and the teacher actors from the service (:meth:`TeacherService.sources`); a
restarted service or actor asks again.

Progress is printed by the service (rows done, rows/s, ETA), and counted in the dashboard as
``ray_raykd_teacher_samples_computed_total{teacher}``.
"""
from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raykd.config import DataConfig, TeacherServiceConfig
from raykd.data.store import Store
from raykd.teachers.cache import TableCache
from raykd.teachers.counters import Counters
from raykd.teachers.modes import LiveMode, LiveTeacher, Reads, StoredMode
from raykd.teachers.pool import ActorPool, TeacherActor, batches_of
from raykd.teachers.precision import stored_dtype
from raykd.teachers.sources import TeacherSource
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import compact_logits, table_key
from raykd.teachers.stream import CHUNK_ROWS, Stream, StreamEnv

__all__ = ["TeacherRequest", "TeacherActor", "TeacherService", "LiveTeacher", "ServiceClient", "start_service",
           "stop_service", "CHUNK_ROWS"]


@dataclass(frozen=True)
class TeacherRequest:
    """A teacher and the outputs the sweep's methods need from it."""

    spec: TeacherSpec
    outputs: tuple[str, ...]
    weights: Any = None  # ObjectRef of the weights' safetensors bytes, put by the driver (start_service sets it)


@ray.remote(num_cpus=0)
class _Sources:
    """What a :class:`TeacherService` is built from and needs again when Ray restarts it: the requests (their
    weights' refs) and ``[the data's ref]``, held for it by a holder that Ray never restarts (so its own arguments
    may be refs), named ``<service name>-sources``, on the driver's node; made and ended by :func:`start_service`
    and :func:`stop_service` (or when the driver lets go of the service's handle)."""

    def __init__(self, requests: list[TeacherRequest], arrays: list) -> None:
        self.requests, self.arrays = requests, arrays

    def get(self) -> tuple[list[TeacherRequest], Any]:
        return self.requests, self.arrays[0]


@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=-1)
class TeacherService:
    """See the module docstring. Built by :func:`start_service`; trials reach it through :class:`ServiceClient`.

    Tables are produced per *stream*, a (teacher, seed) pair: views are drawn from the run's seed, so the runs of a
    seeds stage read their own streams, each made once for all the methods that share the teacher."""

    async def __init__(self, sources: str, data: DataConfig, epochs: int,  # type: ignore[misc] -- Ray awaits it
                       config: TeacherServiceConfig, store_root: str, chunk_rows: int = CHUNK_ROWS) -> None:
        """``sources``: the name of the :class:`_Sources` holding the requests and the data's ref, asked at every
        (re)start (awaited: an async actor must not block in ``ray.get``); the data's ref goes on to the teacher
        actors, which ask this service for it (:meth:`sources`)."""
        requests, arrays = await ray.get_actor(sources).get.remote()
        split = await arrays
        self.requests = {r.spec.name: r for r in sorted(requests, key=lambda r: r.spec.name)}
        self.data, self.split, self.epochs, self.config = data, split, epochs, config
        name = ray.get_runtime_context().get_actor_name() or "raykd-teachers"
        self.pools = {t: ActorPool(r.spec, r.weights, data, [arrays], config, f"{name}/{t}", name)
                      for t, r in self.requests.items()}
        self.counters = Counters(self.requests, name)
        self.cache = TableCache(config.keep_epochs)
        top_k = config.top_k if data.task == "cls" else None
        self.env = StreamEnv({t: r.outputs for t, r in self.requests.items()}, len(split), Store(store_root),
                             self._key, self.counters, self.cache, self._view, top_k, config.precision, chunk_rows)
        self.modes: dict[str, str] = {}
        self.streams: dict[tuple[str, int], Stream] = {}

    def __repr__(self) -> str:  # what the Ray dashboard shows for this actor
        return f"TeacherService({', '.join(self.requests)}; {len(self.streams)} streams)"

    # ------------------------------------------------------------------------------------------- the driver

    async def start(self, seeds: Sequence[int], reads: dict[int, dict[int, np.ndarray]] | None = None
                    ) -> dict[str, str]:
        """Decide every teacher's mode, reserve its actors' resources and start producing the first ``ahead + 1``
        epochs of each seed's stream while the trials start up, so that teachers never wait behind trials that
        wait for teachers; returns the modes. ``reads[seed][epoch]``: the rows the trials of ``seed`` read then
        (:func:`raykd.train.worker.epoch_reads`), planned for those epochs; without it, every training row."""
        modes = {name: await self.mode(name) for name in self.requests}
        for name, mode in modes.items():
            await self.pools[name].actors()
            for seed in seeds if mode == "stored" else ():
                for epoch in range(min(self.config.ahead + 1, self.epochs)):
                    planned = (reads or {}).get(seed, {}).get(epoch)
                    await self.register(name, seed, epoch, np.arange(len(self.split)) if planned is None else planned)
        return modes

    async def mode(self, teacher: str) -> str:
        """``"stored"`` or ``"live"`` for ``teacher`` (decided once, on first use)."""
        if teacher not in self.requests:
            raise KeyError(f"teacher service has no teacher {teacher!r}; it serves {sorted(self.requests)}")
        if teacher not in self.modes:
            mode = self.config.mode
            if mode == "auto":
                per_row = await self.pools[teacher].row_bytes(self.requests[teacher].outputs)
                mode = "live" if per_row * len(self.split) > self.config.live_threshold_bytes else "stored"
            self.modes[teacher] = mode
        return self.modes[teacher]

    async def projection(self, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
        """Per stored teacher, what the streams of ``seeds`` will still write at most: ``tables`` (full tables not
        yet in the store) and ``table_bytes`` (bytes of one, from a probe row, so about for whole SR images of
        varied size; logits at ``top_k`` counted as :func:`compact_logits` stores them), for the driver to check
        against the free disk before any table is made; and what sizing ``--top-k`` needs: ``rows`` per table,
        ``classes`` (the data's; 0 where no top-k applies: SR, or no logits stored), ``logits_bytes`` (of
        ``table_bytes`` per row, the logits') and the tables' ``precision``."""
        out = {}
        for name in self.requests:
            if await self.mode(name) != "stored":
                continue
            per_row = await self.pools[name].row_bytes(self.requests[name].outputs)
            views = sorted({self._view(epoch) for epoch in range(self.epochs)}, key=str)
            missing = [(seed, view) for seed in seeds for view in views
                       if self.env.store.fs.get_file_info(self.env.store.path(self._key(name, seed, view)))
                       .type == pafs.FileType.NotFound]
            classes = len(self.split.classes) if self.data.task == "cls" and "logits" in self.requests[name].outputs \
                else 0
            full = logits = classes * stored_dtype(self.config.precision).itemsize  # the probe counts them all
            if classes and self.env.top_k is not None:
                zeros = np.zeros((1, classes), dtype=np.float32)
                logits = sum(a.nbytes for a in compact_logits(zeros, self.env.top_k, self.config.precision).values())
            out[name] = {"tables": len(missing), "table_bytes": (per_row - full + logits) * len(self.split),
                         "rows": len(self.split), "classes": classes, "logits_bytes": logits,
                         "precision": self.config.precision}
        return out

    def statistics(self) -> dict[str, dict[str, int]]:
        return self.counters.snapshot()

    def produced(self, teacher: str) -> dict[tuple[int, int | None], float]:
        """When (``time.time()``) each finished table of ``teacher`` came to exist in this service, by (seed,
        view)."""
        return self.cache.produced_by(teacher)

    async def actor_pids(self, teacher: str) -> list[int]:
        """Process ids of ``teacher``'s actors (fault tests kill them), answered while they compute."""
        return [pid for pid, _ in await self.actor_places(teacher)]

    async def actor_places(self, teacher: str) -> list[tuple[int, str]]:
        """(process id, node id) of each of ``teacher``'s actors."""
        return await self.pools[teacher].places()

    async def sources(self, teacher: str) -> list:
        """``[weights ref, data ref]`` of ``teacher``: what its actors are built from (asked by each at its start,
        not given as constructor arguments: see the module docstring)."""
        pool = self.pools[teacher]
        return [pool.weights, pool.arrays[0]]

    def shutdown(self) -> None:
        for stream in self.streams.values():
            stream.stop()
        for pool in self.pools.values():
            pool.release()
        self.counters.delete()

    # ------------------------------------------------------------------------------------------- trials

    async def serving(self, teacher: str) -> LiveMode | StoredMode:
        """How ``teacher`` is served: the object a trial builds its source from."""
        if await self.mode(teacher) == "live":
            return LiveMode(tuple(await self.pools[teacher].actors()), self.config.precision)
        return StoredMode(self.epochs, self.config.precision, self.config.ahead)

    async def register(self, teacher: str, seed: int, epoch: int, rows: np.ndarray) -> np.ndarray:
        """A trial with ``seed`` reads samples ``rows`` (in this order) in epoch ``epoch``: plan them; returns the
        epoch's plan (every registered row, in the order they are computed)."""
        return (await self._stream(teacher, seed, epoch)).register(epoch, rows)

    async def piece(self, teacher: str, seed: int, epoch: int, position: int) -> tuple[int, int, list] | None:
        """``(start, stop, [ObjectRef])`` of the published chunk holding plan position ``position`` of epoch
        ``epoch``, once it exists; None when that position was never registered (register it again)."""
        found = await (await self._stream(teacher, seed, epoch)).piece(epoch, position)
        return None if found is None else (found.start, found.stop, [found.ref])

    async def rows(self, teacher: str, seed: int, epoch: int, rows: np.ndarray) -> list:
        """``[ObjectRef]`` of a table of samples ``rows`` of epoch ``epoch``'s view, computed now (rows a trial
        reads beyond what it registered: not kept)."""
        return [await (await self._stream(teacher, seed, epoch)).extra(epoch, rows)]

    async def table(self, teacher: str, seed: int, epoch: int, training: bool = True) -> list:
        """``[ObjectRef]`` of epoch ``epoch``'s (0-based) table of every training sample for a run with ``seed``,
        once it exists. ``training``: the caller trains on that epoch now (the service then also makes the
        ``ahead`` epochs beyond it); a prefetch passes ``False``."""
        stream = await self._stream(teacher, seed, epoch)
        if training:
            for later in range(epoch + 1, min(epoch + self.config.ahead + 1, self.epochs)):
                stream.register(later, np.arange(len(self.split)))
        return [await stream.table(epoch)]

    async def live_actors(self, teacher: str) -> list:
        if await self.mode(teacher) != "live":
            raise RuntimeError(f"teacher {teacher!r} is served from stored tables; ask for tables instead")
        return await self.pools[teacher].actors()

    # ------------------------------------------------------------------------------------------ internals

    def _view(self, epoch: int) -> int | None:
        return None if self.data.task == "sr" else self.data.view_for_epoch(epoch)

    async def _stream(self, teacher: str, seed: int, epoch: int) -> Stream:
        if await self.mode(teacher) != "stored":
            raise RuntimeError(f"teacher {teacher!r} is served live; ask for its actors instead")
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch {epoch} is outside this sweep's {self.epochs} epochs")
        if self.data.task == "sr":  # a whole-image (SR) table does not depend on the seed: one serves every stream
            seed = 0
        if (teacher, seed) not in self.streams:
            self.streams[(teacher, seed)] = Stream(teacher, seed, self.pools[teacher], self.env,
                                                   lambda: self._finished(teacher))
        return self.streams[(teacher, seed)]

    def _finished(self, teacher: str) -> None:
        """Once every stream of ``teacher`` holds every epoch's table, release its actors (a new stream or a
        longer plan gets new ones)."""
        views = {self._view(epoch) for epoch in range(self.epochs)}
        if all(s.done(views) for (name, _), s in self.streams.items() if name == teacher):
            self.pools[teacher].release()

    def _key(self, teacher: str, seed: int, view: int | None, rows: np.ndarray | None = None) -> str:
        request = self.requests[teacher]
        inputs = batches_of(self.split, self.data, seed).describe()
        if self.data.task == "sr":
            inputs.update(tile=self.data.tile, tile_overlap=self.data.tile_overlap)
        return table_key(request.spec.identity(), inputs, request.outputs, view, self.env.top_k,
                         self.config.precision, rows)


class ServiceClient:
    """What a trial holds: the service's handle and the teacher it reads; :meth:`source` builds the trainer's
    source from the teacher's serving mode (:mod:`raykd.teachers.modes`)."""

    def __init__(self, service: Any, teacher: str, outputs: Sequence[str]) -> None:
        self.service, self.teacher, self.outputs = service, teacher, tuple(outputs)

    def source(self, task: str, scale: int, seed: int, reads: Reads | None = None) -> TeacherSource:
        """``reads(epoch)``: the sample indices the trial's steps read in ``epoch``, in step order (summed over its
        workers); given, stored rows are streamed in chunks and only those rows computed."""
        mode = ray.get(self.service.serving.remote(self.teacher))
        return mode.source(self.service, self.teacher, self.outputs, task, scale, seed, reads)


def start_service(requests: list[TeacherRequest], data: DataConfig, arrays_ref: Any, epochs: int,
                  config: TeacherServiceConfig, store_root: str, name: str, chunk_rows: int = CHUNK_ROWS) -> Any:
    """The sweep's teacher service, named ``raykd-teachers-<name>`` (replacing a stale one of that name), computing
    and publishing ``chunk_rows`` rows at a time.

    The teachers' weights are read here, in the driver, and travel through the object store (their sha256 with
    the spec), so the service and its actors may run on nodes that do not have the checkpoint files."""
    for request in requests:
        request.spec.weights_sha256  # cached on the spec, which is pickled with it
    requests = [dataclasses.replace(r, weights=ray.put(r.spec.weights_bytes())) for r in requests]
    actor_name = f"raykd-teachers-{name}"
    for stale in (actor_name, f"{actor_name}-sources"):
        try:
            ray.kill(ray.get_actor(stale), no_restart=True)
        except ValueError:
            pass
    # pinned to the driver's node (if that node goes, so does the driver); a soft affinity was measured to pass over
    # a head without CPUs even for this 0-CPU actor
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    holder = _Sources.options(name=f"{actor_name}-sources", scheduling_strategy=here).remote(requests, [arrays_ref])
    service = TeacherService.options(name=actor_name, scheduling_strategy=here).remote(
        f"{actor_name}-sources", data, epochs, config, store_root, chunk_rows)
    # Ray restarts a dead service with the same arguments, which name the holder of what it needs: the holder keeps
    # the weights' refs alive (it borrows them: Ray frees an object only once its owner, this driver, and every
    # borrower let go) and the caller the data's, until stop_service, or until the driver lets go of the service's
    # handle (a sweep that failed before it could stop the service, a service stopped by hand): without a handle the
    # service cannot be used, and Ray ends it, and the holder once its handle here goes
    key = service._actor_id.hex()
    _HOLDERS[key] = holder
    weakref.finalize(service, _HOLDERS.pop, key, None)
    return service


_HOLDERS: dict[str, Any] = {}  # actor id -> the _Sources holding what a restarted TeacherService needs


def stop_service(service: Any) -> None:
    """Stop a service of :func:`start_service`: its producers, actors and placement groups, and its holder (so the
    teachers' weights are freed)."""
    try:
        ray.get(service.shutdown.remote())
    finally:
        ray.kill(service, no_restart=True)
        holder = _HOLDERS.pop(service._actor_id.hex(), None)
        if holder is not None:
            ray.kill(holder, no_restart=True)
