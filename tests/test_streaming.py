"""Teacher rows streamed in chunks (issue 17, item 4) and the service's pinned weights released (issue 15, item 2).

A trial registers the rows its steps read (``--steps-per-epoch`` caps them); the service computes those rows, in
that order, chunk by chunk, publishes each chunk as soon as it exists, and a step waits only for its batch's
chunk. Ray tests use the digits demo at 16x16, as tests/test_ray.py does.
"""
from __future__ import annotations

import gc
import time

import numpy as np
import pytest
import ray
import torch

from conftest import decoded_demo, task_of, trained_teacher
from raykd.config import DataConfig, ModelConfig, OptimConfig, TeacherServiceConfig, TrainConfig, override
from raykd.models import create_model
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service, stop_service
from raykd.teachers.sources import ChunkedTable, InProcessTeacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable
from raykd.train.checkpoint import save_checkpoint
from raykd.train.loop import train
from raykd.train.worker import epoch_reads

BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=2, batch_size=64, steps_per_epoch=3), seed=0)


def _pieces(plan: np.ndarray, size: int) -> dict[int, tuple[int, int, TeacherTable]]:
    """The pieces of a plan whose row ``i`` holds one logit, ``i``'s own sample index."""
    out = {}
    for start in range(0, len(plan), size):
        rows = plan[start:start + size]
        table = TeacherTable.in_memory("t", rows, {"logits": rows[:, None].astype(np.float32)}, {}, None, "float32")
        out[start] = (start, min(start + size, len(plan)), table)
    return out


def test_a_lookup_waits_only_for_the_chunks_that_hold_its_rows() -> None:
    """The first batch of an epoch needs the plan's first chunk only: the rest need not exist yet."""
    plan = np.random.default_rng(0).permutation(100)
    pieces, asked = _pieces(plan, 16), []

    def piece(position):
        asked.append(position)
        if position >= 32:
            raise AssertionError(f"position {position} is not computed yet")
        return pieces[position // 16 * 16]

    table = ChunkedTable(plan, piece, lambda: plan, None, ("logits",), "float32")
    first = plan[:16][::-1]  # a batch from the plan's front, in any order
    np.testing.assert_array_equal(table.lookup(first)["logits"][:, 0], first)
    assert len(asked) == 1 and asked[0] < 16  # one piece asked for: the first
    across = np.concatenate([plan[20:24], plan[:3]])  # two chunks: rows come back in query order
    np.testing.assert_array_equal(table.lookup(across)["logits"][:, 0], across)
    assert len(asked) == 2 and 16 <= asked[1] < 32
    extra = []  # rows beyond the plan come from a table computed for them
    short = ChunkedTable(plan[:10], piece, lambda: plan, lambda rows: extra.append(rows) or _pieces(rows, 99)[0][2],
                         ("logits",), "float32")
    mixed = np.concatenate([plan[10:12], plan[:2]])
    np.testing.assert_array_equal(short.lookup(mixed)["logits"][:, 0], mixed)
    np.testing.assert_array_equal(extra[0], plan[10:12])


def test_a_restarted_service_is_asked_to_plan_again() -> None:
    plan, again = np.arange(8), np.arange(8)[::-1].copy()
    pieces = _pieces(again, 8)
    calls = []

    def piece(position):
        calls.append(position)
        return None if len(calls) == 1 else pieces[0]  # the first answer: "never registered"

    table = ChunkedTable(plan, piece, lambda: again, None, ("logits",), "float32")
    np.testing.assert_array_equal(table.lookup(np.array([5, 1]))["logits"][:, 0], [5, 1])
    assert calls == [5, 2]  # sample 5 sits at position 5 of the old plan, at 2 of the new one


@pytest.fixture(scope="module")
def splits(local_ray, tmp_path_factory):
    return decoded_demo(BASE, tmp_path_factory)


@pytest.fixture(scope="module")
def task(splits):
    return task_of(BASE, splits)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, task) -> TeacherSpec:
    return trained_teacher(BASE, task, tmp_path_factory, **{"optim.epochs": 1, "optim.steps_per_epoch": 4})


def _service(teacher, splits, store, epochs, name, chunk_rows=1024, **config):
    service = start_service([TeacherRequest(teacher, ("logits",))], BASE.data, splits["train"], epochs,
                            TeacherServiceConfig(mode="stored", **config), str(store), name, chunk_rows=chunk_rows)
    return service, ServiceClient(service, teacher.name, ("logits",))


class FirstStep:
    """A source wrapper that notes when the first batch's outputs were in hand and the service's counters then."""

    def __init__(self, source, service, teacher):
        self.source, self.service, self.teacher, self.outputs = source, service, teacher, source.outputs
        self.at = self.computed_then = None

    def begin_epoch(self, epoch):
        self.source.begin_epoch(epoch)

    def request(self, batch, count=True):
        out = self.source.request(batch, count)()
        if count and self.at is None:
            self.at = time.time()
            self.computed_then = ray.get(self.service.statistics.remote())[self.teacher]["samples_computed"]
        return lambda: out

    def counters(self):
        return self.source.counters()

    @property
    def precision(self):
        return self.source.precision


def test_a_trial_trains_on_the_first_chunk_before_the_table_is_computed(splits, task, tmp_path) -> None:
    """16 steps of 64 rows in 32-row chunks from a slow teacher: the trial's first step had its outputs while most
    of the epoch's rows were not computed yet, and they equal the in-process teacher's."""
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "slow", model=create_model("resnet8x4", num_classes=10),
                           meta={"model": "resnet8x4", "model_kwargs": {"num_classes": 10}})
    slow = TeacherSpec.from_checkpoint(path)
    cfg = override(BASE, {"optim.epochs": 1, "optim.steps_per_epoch": 16, "method.name": "kd"})
    service, client = _service(slow, splits, tmp_path / "store", 1, "firstchunk", chunk_rows=32)
    try:
        reads = epoch_reads(cfg, task, 1)
        ray.get(service.start.remote([cfg.seed], {cfg.seed: {0: reads(0)}}))  # as a sweep's driver starts it
        source = FirstStep(client.source("cls", 4, cfg.seed, reads), service, slow.name)
        train(cfg, task=task, teacher=source)
        deadline = time.time() + 60  # the last chunk served, the table is written to the store after it
        while (cfg.seed, 0) not in (produced := ray.get(service.produced.remote(slow.name))) \
                and time.time() < deadline:
            time.sleep(0.2)
        stats = ray.get(service.statistics.remote())[slow.name]
    finally:
        stop_service(service)
    rows = len(reads(0))  # the steps' rows and the shape probe's 2 (train's setup)
    assert 16 * 64 <= rows <= 16 * 64 + 2 and stats["samples_computed"] == rows and stats["tables_built"] == 1
    assert source.computed_then < rows / 2, source.computed_then  # the first step did not wait for the table
    assert source.at < produced[(cfg.seed, 0)]  # ... which was finished after it
    assert source.counters()["cache_hits"] == 16 * 64


def test_rows_no_trial_reads_are_never_computed_and_a_later_run_reuses_them(teacher, splits, task,
                                                                             tmp_path) -> None:
    """Two trials of 3 steps x 64 rows a 2-epoch run: the service computed 2 x 192 rows, not 2 x the split; what
    they read equals the in-process teacher's; a trial of 5 steps adds only the rows beyond; a later service on the
    same store computes nothing."""
    cfg = override(BASE, {"method.name": "kd"})
    service, client = _service(teacher, splits, tmp_path / "store", 2, "cap", chunk_rows=64)
    try:
        for _ in range(2):
            train(cfg, task=task, teacher=client.source("cls", 4, cfg.seed, epoch_reads(cfg, task, 1)))
        after_two = ray.get(service.statistics.remote())[teacher.name]
        longer = override(cfg, {"optim.steps_per_epoch": 5})
        source = client.source("cls", 4, cfg.seed, epoch_reads(longer, task, 1))
        source.begin_epoch(1)
        batch = task.batch(epoch_reads(longer, task, 1)(1)[256:320], 1, torch.device("cpu"), ("hr",))
        served = source.request(batch)()["logits"]
        reads, more = epoch_reads(cfg, task, 1), epoch_reads(longer, task, 1)
        expected, deadline = len(reads(0)) + len(more(1)), time.time() + 60  # epoch 1's plan grew by 2 steps
        while ray.get(service.statistics.remote())[teacher.name]["samples_computed"] < expected \
                and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # and nothing more comes
        stats = ray.get(service.statistics.remote())[teacher.name]
    finally:
        stop_service(service)
    assert len(task) > 2 * 192
    assert after_two["samples_computed"] == len(reads(0)) + len(reads(1)) and after_two["tables_built"] == 2
    assert 3 * 64 <= len(reads(1)) <= 3 * 64 + 2 and len(more(1)) - len(reads(1)) == 2 * 64
    assert stats["samples_computed"] == expected and stats["tables_built"] == 3
    local = InProcessTeacher(teacher.build(), ("logits",)).request(batch)()["logits"]
    torch.testing.assert_close(served, local, atol=2e-2, rtol=1e-3)  # float16 rows

    again, client = _service(teacher, splits, tmp_path / "store", 2, "again", chunk_rows=64)
    try:
        train(cfg, task=task, teacher=client.source("cls", 4, cfg.seed, epoch_reads(cfg, task, 1)))
        reused = ray.get(again.statistics.remote())[teacher.name]
    finally:
        stop_service(again)
    assert reused["samples_computed"] == 0 and reused["tables_loaded"] == 2


def _driver_refs() -> set[str]:
    """Object ids this driver holds references to (as owner or borrower)."""
    return {h.decode() if isinstance(h, bytes) else str(h)
            for h in ray._private.worker.global_worker.core_worker.get_all_reference_counts()}


@pytest.mark.parametrize("stop", ["stop_service", "by hand"])
def test_the_teacher_weights_live_as_long_as_the_service(teacher, splits, tmp_path, stop) -> None:
    """The teachers' weights, put by the driver, stay in the object store while the service may need them again
    (a restart asks its holder for them), though the driver keeps no ref of its own; once the service is stopped
    (by stop_service, or by hand and its handle dropped, as a sweep that failed before it could stop it does),
    they are freed."""
    before = _driver_refs()
    service, client = _service(teacher, splits, tmp_path / "store", 1, f"weights-{stop.replace(' ', '')}")
    ray.get(service.start.remote([0]))
    gc.collect()
    weights = _driver_refs() - before  # the objects start_service put, held for the service
    assert weights
    ray.kill(service, no_restart=False)  # a dead service, restarted by Ray from its holder
    deadline = time.time() + 60
    while True:
        try:
            ray.get(service.start.remote([0]), timeout=10)
            break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            assert time.time() < deadline, "the service did not come back"
    assert weights <= _driver_refs()
    if stop == "stop_service":
        stop_service(service)
    else:
        ray.get(service.shutdown.remote())
        ray.kill(service, no_restart=True)
    del service, client
    gc.collect()
    deadline = time.time() + 30
    while time.time() < deadline and weights & _driver_refs():
        time.sleep(0.5)
    assert not weights & _driver_refs()
