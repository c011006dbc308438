"""One (teacher, seed) stream of a teacher service: the tables of its views, made in the order trials read them.

Trials *register* what they will read in an epoch (:meth:`Stream.register`: the sample indices of the epoch's
steps, in step order, summed over a trial's workers; trials of one seed share the epoch's permutation, so theirs
are prefixes of one order). A view's table (:class:`Slot`) keeps a *plan*, the union of the registered rows in the
order they were first asked for, and computes it in chunks of ``chunk_rows`` from the front, lowest epoch first;
each chunk is published (put in the object store) as soon as it exists, so a trial's step waits only for the
chunk holding its batch (:meth:`Stream.piece`), and rows no trial registered are never computed. The epochs a
trial registers ahead of the one it trains (``ahead``) are the stream's schedule.

A plan computed in full is one table: written to the persistent store (keyed by its rows, or, when it holds
every sample, by the full table's key) and handed to the :class:`~raykd.teachers.cache.TableCache`. Before a plan
is computed, the store is asked for the full table, then for the plan's own: a later run reuses either.
"""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import ray

from raykd.data.store import Store
from raykd import telemetry
from raykd.teachers.cache import TableCache
from raykd.teachers.counters import Counters
from raykd.teachers.pool import ActorPool
from raykd.teachers.store import TeacherTable

__all__ = ["CHUNK_ROWS", "Piece", "Slot", "Stream", "StreamEnv"]

CHUNK_ROWS = 1024  # rows per actor task: small enough that a killed actor loses little, large enough to batch
EVERY = sys.maxsize  # the end of a piece that holds every sample (a full table read back)


class Piece(NamedTuple):
    """Plan positions ``[start, stop)`` of a slot, as a table in the object store (``ref``)."""

    start: int
    stop: int
    table: TeacherTable
    ref: Any


@dataclass(frozen=True)
class StreamEnv:
    """What every stream of a service shares: ``key(teacher, seed, view, rows)`` is a table's content key (``rows``
    None: the full table's)."""

    outputs: dict[str, tuple[str, ...]]
    num_rows: int
    store: Store
    key: Callable[[str, int, int | None, np.ndarray | None], str]
    counters: Counters
    cache: TableCache
    view_for_epoch: Callable[[int], int | None]
    top_k: int | None
    precision: str
    chunk_rows: int


class Slot:
    """One view's table of a stream: its plan (sample indices in the order trials read them), the pieces made of
    it so far, and which plan positions are computed or being computed (``taken``). Chunks are taken from the
    front of the plan, except that a position a trial waits for and nobody computes yet (``urgent``: rows a trial
    asked for beyond the plan, say) starts the next chunk."""

    def __init__(self, view: int | None, epoch: int, num_rows: int) -> None:
        self.view, self.first = view, epoch
        self.plan = np.zeros(0, dtype=np.int64)
        self.member = np.zeros(num_rows, dtype=bool)
        self.taken = np.zeros(0, dtype=bool)
        self.urgent: set[int] = set()
        self.pieces: list[Piece] = []
        self.tried_store = False
        self.wanted = True  # an evicted slot is made again only when someone asks for it
        self.error: BaseException | None = None
        self.saving = False
        self.saved = 0  # plan positions held by the table last written to (or read from) the persistent store
        self.changed = asyncio.Event()
        self.started = self.printed = time.perf_counter()

    def extend(self, rows: np.ndarray) -> bool:
        """Append the rows not planned yet (in their order); True if any were."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.member)):
            raise ValueError(f"sample indices must lie in [0, {len(self.member)}), got {rows.min()}..{rows.max()}")
        rows = rows[~self.member[rows]]
        rows = rows[np.sort(np.unique(rows, return_index=True)[1])]
        self.member[rows] = True
        self.plan = np.concatenate([self.plan, rows])
        every = bool(self.pieces) and self.pieces[0].stop == EVERY  # a full table holds the new rows too
        self.taken = np.concatenate([self.taken, np.full(len(rows), every)])
        return bool(len(rows))

    def next_chunk(self, size: int) -> tuple[int, int]:
        """Take the next chunk of at most ``size`` untaken plan positions, in a run: ``(start, stop)``."""
        self.urgent = {p for p in self.urgent if not self.taken[p]}
        start = min(self.urgent) if self.urgent else int(np.argmin(self.taken))
        run = self.taken[start:start + size]
        stop = start + (int(np.argmax(run)) if run.any() else len(run))
        self.taken[start:stop] = True
        return start, stop

    @property
    def todo(self) -> bool:
        return self.wanted and self.error is None and not self.taken.all()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def covering(self, position: int) -> Piece | None:
        return next((p for p in self.pieces if p.start <= position < p.stop), None)

    @property
    def covered(self) -> int:
        return sum(min(p.stop, len(self.plan)) - p.start for p in self.pieces)

    @property
    def complete(self) -> bool:
        return self.covered >= len(self.plan)

    @property
    def stored(self) -> bool:
        """Whether the persistent store holds the whole plan (evicted or not)."""
        return self.saved >= len(self.plan)

    def evict(self) -> None:
        """Drop the object-store copies (not while a longer plan is being computed on top of them)."""
        if not self.complete:
            return
        self.pieces, self.tried_store, self.wanted = [], False, False
        self.taken[:] = False


class Stream:
    """The slots of one (teacher, seed) and the producer task that computes them; ``finished()`` is called each
    time a slot becomes complete (the service then may release the teacher's actors)."""

    def __init__(self, teacher: str, seed: int, pool: ActorPool, env: StreamEnv, finished: Callable[[], None]
                 ) -> None:
        self.teacher, self.seed, self.pool, self.env, self.finished = teacher, seed, pool, env, finished
        self.slots: dict[int | None, Slot] = {}
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.extras = 0
        self.producer = asyncio.get_running_loop().create_task(self._produce())

    # ------------------------------------------------------------------------------------------- asked by trials

    def register(self, epoch: int, rows: np.ndarray) -> np.ndarray:
        """Plan ``rows`` (sample indices, in read order) for epoch ``epoch``; returns the view's whole plan."""
        view = self.env.view_for_epoch(epoch)
        slot = self.slots.get(view)
        if slot is None:
            slot = self.slots[view] = Slot(view, epoch, self.env.num_rows)
        slot.first = min(slot.first, epoch)
        if slot.extend(rows) or not slot.wanted:
            slot.wanted = True
            self.wake.set()
        return slot.plan

    async def piece(self, epoch: int, position: int) -> Piece | None:
        """The piece holding plan position ``position`` of epoch ``epoch``'s view, once it exists; None if that
        position was never planned (a restarted service: register again)."""
        slot = self.slots.get(self.env.view_for_epoch(epoch))
        if slot is None or position >= len(slot.plan):
            return None
        if not slot.taken[position]:
            slot.urgent.add(position)
            self.wake.set()
        return await self._until(slot, lambda: slot.covering(position))

    async def table(self, epoch: int) -> Any:
        """The ref of epoch ``epoch``'s view's table of every sample, once it exists and the persistent store holds
        it (so the counters say it was built, and a later run finds it)."""
        plan = self.register(epoch, np.arange(self.env.num_rows))
        slot = self.slots[self.env.view_for_epoch(epoch)]
        whole = await self._until(slot, lambda: slot.stored and (p := slot.covering(0)) is not None
                                  and p.stop >= len(plan) and p)
        return whole.ref

    async def _until(self, slot: Slot, found: Callable[[], Any]) -> Any:
        """``found()`` once it is true, the slot made (again, if it was evicted) meanwhile."""
        while True:
            if slot.error is not None:
                raise slot.error
            value = found()
            if value:
                return value
            changed = slot.changed
            if not slot.wanted:
                slot.wanted = True
                self.wake.set()
            await changed.wait()

    async def extra(self, epoch: int, rows: np.ndarray) -> Any:
        """The ref of a table of ``rows`` of epoch ``epoch``'s view, computed at once (not planned, not kept)."""
        view = self.env.view_for_epoch(epoch)
        self.extras += 1  # (the actors are not released meanwhile)
        try:
            async with self.pool.slots:
                out = await self.pool.compute(self.seed, view, np.asarray(rows, dtype=np.int64),
                                              self.env.outputs[self.teacher])
        finally:
            self.extras -= 1
        self.env.counters.add(self.teacher, samples_computed=len(rows))
        table = TeacherTable.in_memory(f"rows-{self.teacher}-{self.seed}-{view}", rows, out, {}, self.env.top_k,
                                       self.env.precision)
        return ray.put(table)

    def done(self, views: set[int | None]) -> bool:
        """Whether every one of ``views`` has a complete table and nothing is computing."""
        computing = self.in_flight - {asyncio.current_task()}  # (the chunk that asks is done)
        return not computing and not self.extras and all(v in self.slots and self.slots[v].stored for v in views)

    def stop(self) -> None:
        self.producer.cancel()
        for task in self.in_flight:
            task.cancel()

    # ------------------------------------------------------------------------------------------- the producer

    def _next(self) -> Slot | None:
        """The slot to take a chunk of: one a trial waits on first, else the lowest epoch's."""
        todo = [s for s in self.slots.values() if s.todo]
        return min(todo, key=lambda s: (not s.urgent, s.first)) if todo else None

    async def _produce(self) -> None:
        while True:
            self.wake.clear()
            if self._next() is None:
                await self.wake.wait()
                continue
            await self.pool.slots.acquire()  # shared with the teacher's other streams
            slot = self._next()  # (what changed while this waited)
            if slot is None or not slot.tried_store:
                try:
                    if slot is not None:
                        slot.tried_store = True
                        await self._load(slot)
                finally:
                    self.pool.slots.release()
                continue
            start, stop = slot.next_chunk(self.env.chunk_rows)
            task = asyncio.get_running_loop().create_task(self._compute(slot, start, stop))
            self.in_flight.add(task)
            task.add_done_callback(lambda t: (self.in_flight.discard(t), self.pool.slots.release()))

    async def _load(self, slot: Slot) -> None:
        """The full table from the persistent store, else the one of exactly this plan, if either is there."""
        plan = slot.plan.copy()
        slot.saved = 0
        for rows in (None,) if len(plan) == self.env.num_rows else (None, plan):
            table = await asyncio.to_thread(self.env.store.load, self.env.key(self.teacher, self.seed, slot.view,
                                                                              rows))
            if table is not None:
                stop = EVERY if rows is None else len(plan)
                self._publish(slot, Piece(0, stop, found := TeacherTable(table), ray.put(found)))
                slot.taken[:stop] = True
                slot.saved = stop
                self.env.counters.add(self.teacher, tables_loaded=1)
                self._finished(slot, found)
                return

    async def _compute(self, slot: Slot, start: int, stop: int) -> None:
        rows = slot.plan[start:stop]
        try:
            out = await self.pool.compute(self.seed, slot.view, rows, self.env.outputs[self.teacher])
            meta = {"teacher": self.teacher, "seed": self.seed, "view": slot.view}
            table = TeacherTable.in_memory(f"chunk-{self.teacher}-{self.seed}-{slot.view}-{start}", rows, out, meta,
                                           self.env.top_k, self.env.precision)
        except Exception as err:  # the waiting trials see it
            slot.error = err
            slot.notify()
            raise
        self.env.counters.add(self.teacher, samples_computed=len(rows))  # as they come: a restart keeps what was done
        self._publish(slot, Piece(start, stop, table, ray.put(table)))
        self._progress(slot)
        while slot.complete and slot.saved < len(slot.plan) and not slot.saving:
            slot.saving = True
            try:
                await self._save(slot)
            finally:
                slot.saving = False

    def _publish(self, slot: Slot, piece: Piece) -> None:
        slot.pieces.append(piece)
        slot.notify()

    def _progress(self, slot: Slot, every: float = 10.0) -> None:
        """A line every ``every`` seconds while a plan is computed: rows done, rows/s, ETA."""
        done, total, now = slot.covered, len(slot.plan), time.perf_counter()
        if done == total or now - slot.printed >= every:
            rate = done / max(now - slot.started, 1e-9)
            where = f", seed {self.seed}, view {slot.view}" if slot.view is not None else ", whole images"
            print(f"teacher {self.teacher}{where}: {done}/{total} rows, {rate:.0f} rows/s, "
                  f"ETA {(total - done) / max(rate, 1e-9):.0f} s", flush=True)
            slot.printed = now

    async def _save(self, slot: Slot) -> None:
        """The complete plan as one table, written to the persistent store; it replaces the pieces."""
        n = len(slot.plan)
        parts = sorted(slot.pieces, key=lambda p: p.start)
        rows = None if n == self.env.num_rows else slot.plan[:n]
        key = self.env.key(self.teacher, self.seed, slot.view, rows)
        columns, meta = TeacherTable.concat([p.table for p in parts])
        found = TeacherTable(await asyncio.to_thread(self.env.store.save, key, columns, meta))
        slot.pieces = [Piece(0, n, found, ray.put(found))] + [p for p in slot.pieces if p.start >= n]
        slot.saved = n
        slot.notify()
        self.env.counters.add(self.teacher, tables_built=1)
        self._finished(slot, found)

    def _finished(self, slot: Slot, table: TeacherTable) -> None:
        self.env.counters.set(self.teacher, table_bytes=table.nbytes)
        telemetry.cache_bytes(self.teacher, table.nbytes)
        self.env.cache.add(self.teacher, self.seed, slot.view, slot.evict)
        self.finished()
