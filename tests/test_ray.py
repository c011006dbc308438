"""The Ray half: the streaming teacher service, Tune + Optuna sweeps, Ray Train workers, dashboard metrics.

One local Ray (2 CPUs, metrics exported on a free port) serves the whole module; the data is the built-in
digits demo at 16x16 and the teacher a small resnet8, so every sweep takes seconds per trial.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch

from conftest import decoded_demo, task_of, trained_teacher
from raykd.config import (DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig,
                          TrainConfig, override)
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service
from raykd.teachers.sources import InProcessTeacher
from raykd.teachers.spec import TeacherSpec
from raykd.train.loop import train
from raykd.tune.sweep import run_sweep

BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=2, batch_size=64, steps_per_epoch=3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port(tmp_path_factory):
    port = _free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port, log_to_driver=False)
    yield port
    ray.shutdown()


@pytest.fixture(scope="module")
def splits(metrics_port, tmp_path_factory):
    return decoded_demo(BASE, tmp_path_factory)


@pytest.fixture(scope="module")
def task(splits):
    return task_of(BASE, splits)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, task) -> TeacherSpec:
    return trained_teacher(BASE, task, tmp_path_factory, **{"optim.epochs": 3, "optim.steps_per_epoch": None})


def _sweep(tmp_path: Path, **changes) -> SweepConfig:
    values = dict(name="sweep", methods=("none", "kd", "figkd"), num_samples=3, storage=str(tmp_path / "runs"),
                  cache_dir=str(tmp_path / "cache"), seeds=0, verbose=0)
    return SweepConfig(**{**values, **changes})


def _service(teacher, splits, tmp_path, epochs, **config):
    service = start_service([TeacherRequest(teacher, ("logits",))], BASE.data, splits["train"], epochs,
                            TeacherServiceConfig(**config), str(tmp_path / "store"), f"test-{tmp_path.name}")
    return service, ServiceClient(service, teacher.name, ("logits",))


class Recording:
    """A teacher source that records every batch's outputs (and delegates to the real one)."""

    def __init__(self, source):
        self.source, self.seen, self.outputs = source, [], source.outputs

    def begin_epoch(self, epoch):
        self.epoch = epoch
        self.source.begin_epoch(epoch)

    def request(self, batch, count=True):
        fetch = self.source.request(batch, count)
        if count:
            out = fetch()
            self.seen.append((self.epoch, np.asarray(batch["index"]).copy(), out["logits"].detach().clone()))
            return lambda: out
        return fetch

    def counters(self):
        return self.source.counters()

    @property
    def precision(self):
        return self.source.precision


def test_service_tables_equal_the_in_process_teacher_batch_for_batch(metrics_port, teacher, splits, task,
                                                                      tmp_path) -> None:
    """A student trained from the service sees, for 3 epochs of fresh views, what the in-process teacher computes
    on the same views (to the float16 the tables store)."""
    cfg = override(BASE, {"optim.epochs": 3, "method.name": "kd"})
    service, client = _service(teacher, splits, tmp_path, epochs=3)
    try:
        stored = Recording(client.source("cls", 4, cfg.seed))
        train(cfg, task=task, teacher=stored)
        local = Recording(InProcessTeacher(teacher.build(), ("logits",)))
        train(cfg, task=task, teacher=local)
        stats = ray.get(service.statistics.remote())[teacher.name]
    finally:
        ray.get(service.shutdown.remote())
    assert len(stored.seen) == len(local.seen) == 3 * 3
    assert [e for e, _, _ in stored.seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for (e1, i1, a), (e2, i2, b) in zip(stored.seen, local.seen):
        assert e1 == e2 and np.array_equal(i1, i2)
        torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-3)  # float16 storage
    assert stats["tables_built"] == 3 and stats["samples_computed"] == 3 * len(task)


def test_epochs_no_trial_reaches_are_never_computed(metrics_port, teacher, splits, task, tmp_path) -> None:
    """Four trials of 4 epochs each stopped after epoch 1 (as ASHA stops weak trials): the service made the
    tables of epoch 1 and of epoch 2 (the one epoch it keeps ahead), never those of epochs 3 and 4; the trials
    started training before the last table they could need existed."""
    cfg = override(BASE, {"optim.epochs": 4, "method.name": "kd"})
    service, client = _service(teacher, splits, tmp_path, epochs=4, ahead=1)

    class Stopped(Exception):
        pass

    def stop_after_first_epoch(metrics, _):
        raise Stopped

    try:
        starts = []
        for _ in range(4):
            started = time.time()
            with pytest.raises(Stopped):
                train(cfg, task=task, teacher=client.source("cls", 4, cfg.seed), report=stop_after_first_epoch,
                      started=started)
            starts.append(started)
        time.sleep(1)  # let a (wrong) eager producer show itself
        stats = ray.get(service.statistics.remote())[teacher.name]
        produced = ray.get(service.produced.remote(teacher.name))
    finally:
        ray.get(service.shutdown.remote())
    assert stats["samples_computed"] == 2 * len(task) and stats["tables_built"] == 2
    assert sorted(view for (_, view) in produced) == [0, 1]
    assert min(starts) < max(produced.values())  # the first trial was running before epoch 2's table existed


def test_sweep_computes_each_epoch_once_and_a_second_sweep_nothing(metrics_port, teacher, splits, task,
                                                                    tmp_path) -> None:
    """4 trials x 3 epochs of 3 steps: one table per epoch, shared by every trial, computed once, of only the rows
    the trials read (the driver plans the first epochs as its trials will read them, the trials the later ones);
    none when the same sweep runs again on the same cache."""
    from raykd.train.worker import epoch_reads

    base = override(BASE, {"optim.epochs": 3})
    sweep = _sweep(tmp_path, methods=("kd", "figkd"), num_samples=4, max_concurrent_trials=2,
                   grace_period=3)
    first = run_sweep(base, teacher, sweep, splits=splits)
    directory = tmp_path / "runs" / "sweep"
    table = pd.read_parquet(directory / "results.parquet")
    assert len(table) == 4 and (table["status"] == "ok").all() and (table["epochs"] == 3).all()
    read = sum(len(epoch_reads(base, task, 1)(epoch)) for epoch in range(3))  # 3 steps x 64 (+ the shape probe's)
    assert first["teacher_samples_computed"] == read < len(task)
    assert first["teachers"][teacher.name]["tables_built"] == 3
    assert (table["teacher_samples_computed"] == 0).all()
    assert (table["cache_hits"] == 3 * 3 * 64).all()  # every step's outputs read from the tables
    assert (table["teacher"] == teacher.name).all() and table["teacher_rows_share"].sum() == read
    assert table["teacher_rows_share"].max() - table["teacher_rows_share"].min() <= 1  # equal reads, equal shares
    assert {"startup_s", "node", "seed", "wall_s"} <= set(table.columns)
    markdown = (directory / "summary.md").read_text()
    assert all(f"| {m} |" in markdown for m in ("kd", "figkd"))
    for plot in ("learning_curves.png", "trials.png", "best_so_far.png"):
        assert (directory / plot).stat().st_size > 1000

    second = run_sweep(base, teacher, dataclasses.replace(sweep, name="again"), splits=splits)
    assert second["teacher_samples_computed"] == 0
    assert second["teachers"][teacher.name]["tables_loaded"] == 3


def test_a_sweep_builds_its_task_once_per_process_and_tracks_every_trial_in_mlflow(metrics_port, teacher,
                                                                                     splits, tmp_path) -> None:
    sweep = _sweep(tmp_path, methods=("none", "kd"), num_samples=4, max_concurrent_trials=1, log=("mlflow",),
                   seeds=1)
    summary = run_sweep(override(BASE, {"optim.epochs": 1}), teacher, sweep, splits=splits)
    table = pd.read_parquet(tmp_path / "runs" / "sweep" / "results.parquet")
    rows = [json.loads(line) for trial in (tmp_path / "runs" / "sweep").glob("run_trial_*")
            for line in (trial / "result.json").read_text().splitlines()]
    by_pid = {}
    for row in rows:
        by_pid.setdefault(row["pid"], set()).add(row["task_builds"])
    assert len(rows) == 4 and len(by_pid) < 4  # trial processes are reused ...
    assert all(builds == {1} for builds in by_pid.values())  # ... and each built the task once
    assert (table["startup_s"] < 30).all()
    # MLflow, offline, read back with its own client: a SQLite store beside the results, one run per trial of both
    # stages, tagged, with the same parameter names in both and every default; no Tune internals as metrics
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'sweep' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep")
    assert experiment.artifact_location == (tmp_path / "runs" / "sweep" / "mlflow-artifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    stages = [run.data.tags["raykd.stage"] for run in runs]
    assert sorted(stages) == ["search"] * 4 + ["seeds"] * 2 and all("val_top1" in run.data.metrics for run in runs)
    kd = [run for run in runs if run.data.tags["raykd.method"] == "kd"]
    assert {frozenset(run.data.params) for run in kd} == {frozenset(
        {"method", "kd.w_ce", "kd.w_kd", "kd.T", "model", "optim.lr", "optim.epochs", "optim.batch_size", "seed"})}
    assert not {"done", "pid", "training_iteration", "time_total_s"} & {m for run in runs for m in run.data.metrics}
    assert all(run.info.run_name == f"{run.data.tags['raykd.stage']}-{run.data.tags['raykd.method']}-"
                                    f"{run.data.tags['raykd.trial']}" for run in runs)
    (best,) = [run for run in runs if run.data.tags.get("raykd.best_student") == "true"]
    assert best.data.tags["raykd.trial"] == summary["best"]["trial"]
    assert {a.path for a in client.list_artifacts(best.info.run_id, "student")} >= {"student/model.safetensors"}
    # a distilled student's checkpoint names the teacher the service served it; the student alone names none
    for row in table.itertuples():
        saved = json.loads((Path(row.checkpoint) / "meta.json").read_text())["config"]["teacher"]
        assert (saved["checkpoint"] == teacher.checkpoint) if row.method == "kd" else saved is None, (row, saved)
    # TensorBoard needs no flag: Tune writes the event files of every trial
    assert len(list((tmp_path / "runs" / "sweep").glob("run_trial_*/events.out.tfevents.*"))) == 4


def test_a_corrupt_table_is_detected_and_rebuilt(metrics_port, teacher, splits, task, tmp_path) -> None:
    service, client = _service(teacher, splits, tmp_path, epochs=1)
    try:
        good = client.source("cls", 4, 0)
        good.begin_epoch(0)
    finally:
        ray.get(service.shutdown.remote())
    key = good.current.key
    path = tmp_path / "store" / f"{key}.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash mid-copy, say
    service, client = _service(teacher, splits, tmp_path, epochs=1)
    try:
        rebuilt = client.source("cls", 4, 0)
        rebuilt.begin_epoch(0)
        stats = ray.get(service.statistics.remote())[teacher.name]
    finally:
        ray.get(service.shutdown.remote())
    assert stats == {**stats, "tables_built": 1, "tables_loaded": 0, "samples_computed": len(task)}
    assert Path(str(path) + ".corrupt").exists()
    index = np.arange(len(task))
    np.testing.assert_array_equal(rebuilt.current.lookup(index)["logits"], good.current.lookup(index)["logits"])


def test_live_mode_serves_what_the_tables_hold(metrics_port, teacher, splits, task, tmp_path) -> None:
    stored_service, stored = _service(teacher, splits, tmp_path / "a", epochs=2)
    live_service, live = _service(teacher, splits, tmp_path / "b", epochs=2, mode="live")
    try:
        batch = task.batch(np.array([3, 7, 11]), 1, torch.device("cpu"), ("hr",))
        from_table = stored.source("cls", 4, 0)
        from_table.begin_epoch(1)
        from_actor = live.source("cls", 4, 0)
        a, b = from_table.request(batch)()["logits"], from_actor.request(batch)()["logits"]
    finally:
        for service in (stored_service, live_service):
            ray.get(service.shutdown.remote())
    torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-3)
    assert from_actor.counters()["teacher_samples_computed"] == 3 and from_table.counters()["cache_hits"] == 3


def test_a_trial_with_two_ray_train_workers_runs_inside_the_sweep(metrics_port, teacher, splits, tmp_path) -> None:
    from ray.train import ScalingConfig

    sweep = _sweep(tmp_path, name="ddp", methods=("kd",), num_samples=1,
                   scaling=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}))
    summary = run_sweep(override(BASE, {"optim.epochs": 1}), teacher, sweep, splits=splits)
    table = pd.read_parquet(tmp_path / "runs" / "ddp" / "results.parquet")
    assert summary["failed"] == 0 and len(table) == 1 and table["epochs"].iloc[0] == 1
    # both workers' reads are counted: 2 workers x 3 steps x 64 samples (disjoint shards of the epoch)
    assert table["cache_hits"].iloc[0] == 2 * 3 * 64
    # the Train run's checkpoints live beside the sweep's results, not on a node's /tmp
    assert any((tmp_path / "runs" / "ddp-train").rglob("checkpoint_*"))


def test_raykd_series_reach_the_prometheus_endpoint(metrics_port, teacher, tmp_path) -> None:
    """Runs after the sweeps above have set every series; Ray exports them about ten seconds later, also those
    set by processes that have ended since (trials, teacher actors)."""
    wanted = ["ray_raykd_teacher_samples_computed_total", "ray_raykd_cache_hits_total", "ray_raykd_cache_bytes",
              "ray_raykd_student_samples_per_second", "ray_raykd_best_metric"]
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"series not exported: {missing}"
    assert f'teacher="{teacher.name}"' in text


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")
def test_trials_on_a_node_read_one_copy_of_the_decoded_data(metrics_port) -> None:
    """Two trial processes map a decoded split (48 MiB) that the driver put once: neither copies it."""
    from raykd.data.arrays import ImageArrays

    rng = np.random.default_rng(0)
    split = ImageArrays(rng.integers(0, 255, (4096, 64, 64, 3), dtype=np.uint8), np.zeros(4096, dtype=np.int64),
                        ("a", "b"), "key")
    splits = {"train": ray.put(split)}

    def unique_memory() -> int:  # this process's private pages; shared object-store pages excluded
        fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
        return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty"))

    @ray.remote(num_cpus=0)
    class Reader:  # defined here: shipped by value, like a trial's code
        def __init__(self):
            import raykd.data.arrays  # noqa: F401  (what the split unpickles into, loaded before measuring)

        def read(self, refs):
            before = unique_memory()
            arrays = ray.get(refs["train"])
            total = int(arrays.images.sum(dtype=np.int64))  # every page read
            return unique_memory() - before, total

    readers = [Reader.remote() for _ in range(2)]
    (grew_a, total_a), (grew_b, total_b) = ray.get([r.read.remote(splits) for r in readers])
    assert total_a == total_b == int(split.images.sum(dtype=np.int64))
    assert grew_a < 0.05 * split.nbytes and grew_b < 0.05 * split.nbytes, (grew_a, grew_b, split.nbytes)

