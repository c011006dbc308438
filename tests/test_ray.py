"""The Ray half: teacher service and cache, Tune + Optuna sweeps, Ray Train workers, dashboard metrics.

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

from raykd.data.classification import open_dataset
from raykd.teachers.cache import CacheCorruptionWarning
from raykd.teachers.pool import TeacherService
from raykd.teachers.specs import TeacherSpec
from raykd.train.config import TrainConfig
from raykd.train.loop import train
from raykd.tune.sweep import SweepConfig, run_sweep

BASE = TrainConfig(model="resnet8", data="demo", image_size=16, epochs=2, batch_size=64, steps_per_epoch=3,
                   num_views=2, lr=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port():
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, _metrics_export_port=port, log_to_driver=False)
    yield port
    ray.shutdown()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> TeacherSpec:
    path = tmp_path_factory.mktemp("teacher") / "resnet8"
    train({**BASE.to_dict(), "epochs": 3, "steps_per_epoch": None}, checkpoint_dir=path)
    return TeacherSpec.from_checkpoint(path)


@pytest.fixture(scope="module")
def train_rows() -> int:
    """(sample, view) pairs of the training set: what one teacher pass computes."""
    return len(open_dataset("demo", None, "train")) * BASE.num_views


def test_sweep_writes_results_and_a_second_sweep_computes_no_teacher_outputs(
        metrics_port, teacher, train_rows, tmp_path) -> None:
    sweep = SweepConfig(name="first", methods=["none", "kd", "figkd"], num_samples=3, storage=str(tmp_path / "runs"),
                        cache_dir=str(tmp_path / "cache"), max_concurrent_trials=2, verbose=0)
    first = run_sweep(BASE, teacher, sweep)

    directory = tmp_path / "runs" / "first"
    table = pd.read_parquet(directory / "results.parquet")
    assert len(table) == 3 and set(table["method"]) == {"none", "kd", "figkd"}  # the papers' defaults come first
    assert {"T", "w_kd", "w_hf", "wavelet", "best_val_top1", "last_val_top1", "epochs", "wall_s",
            "teacher_samples_computed", "cache_hits"} <= set(table.columns)
    assert (table["status"] == "ok").all() and (table["epochs"] >= 1).all()
    best = table.loc[table["best_val_top1"].idxmax()]
    assert first["best"]["trial"] == best["trial"] and first["best"]["val_top1"] == pytest.approx(best["best_val_top1"])
    markdown = (directory / "summary.md").read_text()
    assert all(f"| {m} |" in markdown for m in ("none", "kd", "figkd"))
    for plot in ("trials.png", "best_so_far.png"):
        assert (directory / plot).stat().st_size > 1000
    assert json.loads((directory / "summary.json").read_text())["trials"] == 3

    # the teacher ran once per (sample, view), in the cache build; trials only looked outputs up
    assert first["teacher_samples_computed"] == train_rows
    assert first["teachers"][teacher.name]["entries_built"] == 1
    distilled = table[table["method"] != "none"]
    assert (distilled["teacher_samples_computed"] == 0).all()
    assert (distilled["cache_hits"] >= BASE.steps_per_epoch * BASE.batch_size).all()
    assert (table.loc[table["method"] == "none", "cache_hits"] == 0).all()
    assert first["cache_hits"] == table["cache_hits"].sum()

    second = run_sweep(BASE, teacher, dataclasses.replace(sweep, name="second"))
    assert second["teacher_samples_computed"] == 0
    assert second["teachers"][teacher.name] | {"cache_bytes": 0} == {
        "samples_computed": 0, "entries_built": 0, "entries_loaded": 1, "cache_bytes": 0}


def test_a_corrupted_cache_entry_is_detected_and_rebuilt(metrics_port, teacher, train_rows, tmp_path) -> None:
    with TeacherService([teacher], BASE, tmp_path) as service:
        good = ray.get(service.handles(["logits"])[teacher.name].table)
    (entry,) = (tmp_path / "teacher_outputs").glob("*.parquet")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a crash mid-copy, say

    with TeacherService([teacher], BASE, tmp_path) as service, pytest.warns(CacheCorruptionWarning, match=entry.name):
        rebuilt = ray.get(service.handles(["logits"])[teacher.name].table)
    assert service.stats[teacher.name].entries_built == 1
    assert service.stats[teacher.name].samples_computed == train_rows
    np.testing.assert_array_equal(rebuilt.lookup(good.index, good.view)["logits"], good.array("logits"))


def test_live_mode_serves_what_the_cache_holds(metrics_port, teacher, tmp_path) -> None:
    with TeacherService([teacher], BASE, tmp_path) as service:
        cached = service.handles(["logits", "penultimate"])[teacher.name]
        live = service.handles(["logits", "penultimate"], mode="live")[teacher.name]
        assert not cached.live and live.live
        task = service.task
        batch = torch.utils.data.default_collate([task.train.get(i, 1) for i in (3, 7, 11)])
        from_cache = cached.source(task).request(batch)()
        from_actor = live.source(task).request(batch)()
    for name in ("logits", "penultimate"):
        torch.testing.assert_close(from_actor[name], from_cache[name])


def test_two_ray_train_workers_train_on_disjoint_shards(metrics_port, teacher, tmp_path) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raykd.teachers.sources import InProcessTeacher
    from raykd.train.ray_worker import ray_runtime

    def worker(config):
        rt = ray_runtime()
        seen = []

        class Recording(InProcessTeacher):
            def request(self, batch):
                seen.extend(batch["index"].tolist())
                return super().request(batch)

        spec = config["teacher"]
        train(config["train"], runtime=rt, teacher=lambda task: Recording(spec.build(), ("logits",)),
              report=lambda metrics, _: ray.train.report(metrics))
        Path(config["out"], f"rank{rt.rank}.json").write_text(json.dumps({"world": rt.world_size, "seen": seen}))

    cfg = {**BASE.to_dict(), "method": "kd", "epochs": 1, "steps_per_epoch": 2, "batch_size": 16}
    result = TorchTrainer(worker, train_loop_config={"train": cfg, "teacher": teacher, "out": str(tmp_path)},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(storage_path=str(tmp_path / "storage"))).fit()
    assert result.error is None
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    seen0, seen1 = (set(r["seen"][2:]) for r in ranks)  # the first two are the shape probe
    assert len(seen0) == len(seen1) == 2 * 16
    assert not seen0 & seen1


def test_a_trial_with_two_ray_train_workers_runs_inside_the_sweep(metrics_port, teacher, tmp_path) -> None:
    sweep = SweepConfig(name="ddp", methods=["kd"], num_samples=1, workers_per_trial=2, cpus_per_worker=0.5,
                        storage=str(tmp_path),
                        cache_dir=str(tmp_path / "cache"), verbose=0)
    summary = run_sweep(dataclasses.replace(BASE, epochs=1), teacher, sweep)
    table = pd.read_parquet(tmp_path / "ddp" / "results.parquet")
    assert summary["failed"] == 0 and len(table) == 1 and table["epochs"].iloc[0] == 1
    # both workers' cache hits are counted: 2 workers x 3 steps x 64 samples, plus each worker's shape probe
    assert table["cache_hits"].iloc[0] == 2 * (3 * 64 + 2)


def test_raykd_series_reach_the_prometheus_endpoint(metrics_port, teacher, tmp_path) -> None:
    """Runs after the sweeps above have set every series; Ray exports them about ten seconds later, also those
    set by processes that have ended since (trials, teacher actors)."""
    with TeacherService([teacher], BASE, tmp_path) as service:
        service.handles(["logits"])  # counters just incremented
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
