"""A sweep on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: separate raylets and object stores on this
machine) that loses a node mid-sweep.

The head has no CPUs (as in ``cluster.yaml``), two workers one CPU each; token authentication is on (as
``cluster.yaml`` sets it: ``RAY_AUTH_MODE=token`` on every node and client, one shared token). The results, the
Train checkpoints and the store are on paths every "node" sees (given as ``file://`` URIs, so pyarrow's
filesystem path is the one exercised).
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig, TrainConfig, override
from raykd.tune.resources import InsufficientResources, check_sweep_resources
from raykd.tune.sweep import decoded_splits, run_sweep
from raykd.tune.teachers import prepare_teacher

from tune_rows import live_rows, trial_rows

pytestmark = pytest.mark.slow

EPOCHS = 4
BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=EPOCHS, batch_size=64))


def _refresh_auth() -> None:
    """This process read RAY_AUTH_MODE and the token when Ray was imported; make it read them again."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def start_cluster(monkeypatch, request):
    """A head with no CPUs and two 1-CPU workers, token authentication on, this process connected as driver;
    stopped when the test ends. (Started by the test, not by a fixture: conftest.py lets only the fixtures it
    names start Ray.)"""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Cluster starts every node with this process's environment: RAY_AUTH_MODE=token and the token (Ray would
    # otherwise read ~/.ray/auth_token) reach the GCS, the raylets and the workers as `ray start` would give them
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    _refresh_auth()
    # Cluster records its head in /tmp/ray/ray_current_cluster, where every `ray.init()` on this machine would
    # then connect (and `ray.init(num_cpus=...)` fail): keep whatever was there, so other Ray users are not diverted
    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.exists() else None
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})

    def stop() -> None:
        ray.shutdown()
        nodes.shutdown()  # removes the address file
        _restore(address_file, before)
        monkeypatch.undo()
        _refresh_auth()

    request.addfinalizer(stop)
    _restore(address_file, before)
    workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    return nodes, workers


def _restore(path: Path, content: str | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(content)


class NodeRemover(threading.Thread):
    """Removes a worker node once (1) every teacher table has been produced and the teacher actors released, (2) a
    trial has completed and (3) a trial on that node is mid-run (reported epoch 1..EPOCHS-2). Records where the
    service and the teacher actors ran, the nodes trials reported from and the trials that had completed when the
    node went."""

    def __init__(self, nodes, workers, name: str, teacher: str) -> None:
        super().__init__(daemon=True)
        self.nodes, self.workers, self.name, self.teacher = nodes, workers, name, teacher
        self.actor_nodes: set[str] = set()
        self.trial_nodes: set[str] = set()
        self.service_node: str | None = None
        self.completed: dict[str, str] = {}  # trial id -> node, of the trials completed when the node went
        self.removed: tuple[str, str, int] | None = None
        self.done = threading.Event()

    def run(self) -> None:
        service, released = None, False
        while not self.done.is_set():
            time.sleep(0.1)
            if service is None:
                try:
                    service = ray.get_actor(f"raykd-teachers-{self.name}")
                    self.service_node = ray.get(service.__ray_call__.remote(
                        lambda _: ray.get_runtime_context().get_node_id()))
                except ValueError:
                    continue
            if not released:
                places = ray.get(service.actor_places.remote(self.teacher))
                self.actor_nodes |= {node for _, node in places}
                released = not places and len(ray.get(service.produced.remote(self.teacher))) == EPOCHS
                continue
            rows = live_rows(self.name)
            self.trial_nodes |= {row["node"] for found in rows.values() for row in found}
            completed = {r[-1]["trial_id"]: r[-1]["node"] for r in rows.values() if r[-1]["epoch"] == EPOCHS}
            for trial, r in rows.items():
                node = r[-1]["node"]
                if completed and 1 <= r[-1]["epoch"] <= EPOCHS - 2:
                    self.nodes.remove_node(next(w for w in self.workers if w.node_id == node))
                    self.removed, self.completed = (trial, node, r[-1]["epoch"]), completed
                    return

    def __str__(self) -> str:
        return (f"removed {self.removed}; teacher actors on {self.actor_nodes}; service on {self.service_node}; "
                f"trials reported from {self.trial_nodes}")


def test_a_sweep_uses_both_workers_and_survives_losing_one(tmp_path, monkeypatch, request) -> None:
    from ray.train import ScalingConfig
    from ray.tune import FailureConfig

    nodes, workers = start_cluster(monkeypatch, request)
    worker_ids = {w.node_id for w in workers}
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    sweep = SweepConfig(name="cluster", methods=("kd",), num_samples=4, grace_period=EPOCHS, seeds=0, verbose=0,
                        storage=runs.as_uri(), cache_dir=cache.as_uri(), failure=FailureConfig(max_failures=2),
                        teacher_service=TeacherServiceConfig(replicas=2, num_cpus=0.5, mode="stored"))

    # a trial or teacher actor larger than every node is refused at once, with the numbers
    for too_big, what in ((dict(scaling=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2})), "trial"),
                          (dict(teacher_service=TeacherServiceConfig(num_cpus=1.5)), "teacher actor")):
        with pytest.raises(InsufficientResources, match=rf"{what}.*asks for .* CPU.*nodes 1 CPU/0 GPU, 0 CPU/0 GPU"):
            check_sweep_resources(dataclasses.replace(sweep, **too_big))

    splits = decoded_splits(BASE, sweep.cache_dir)  # the store through pyarrow (file:// URI)
    teacher = prepare_teacher(None, override(BASE, {"optim.epochs": 1, "optim.steps_per_epoch": 5}), splits,
                              cache_dir=cache)  # trained in a Ray task sized to one node (1 CPU)
    remover = NodeRemover(nodes, workers, sweep.name, teacher.name)
    remover.start()
    try:
        summary = run_sweep(BASE, teacher, sweep, splits=splits)
    finally:
        remover.done.set()

    assert remover.removed is not None, f"no trial was mid-run on a worker after another had completed: {remover}"
    trial, lost, at_epoch = remover.removed
    (survivor,) = worker_ids - {lost}
    table = pd.read_parquet(runs / "cluster" / "results.parquet")
    assert len(table) == 4 and (table["status"] == "ok").all() and (table["epochs"] == EPOCHS).all()
    assert remover.trial_nodes | set(table["node"]) == worker_ids, f"{remover}"  # trials ran on both workers
    # trials that completed before the node was lost keep their results, wherever they ran
    nodes_of = table.set_index("trial")["node"]
    assert all(nodes_of[trial] == node for trial, node in remover.completed.items()), f"{remover}"
    assert len(remover.actor_nodes) == 1 and remover.actor_nodes <= worker_ids, f"{remover}"  # teacher actors: 1 node
    assert remover.service_node == nodes.head_node.node_id  # the service on the driver's node: no worker takes it

    # the lost trial was retried on the other node from the checkpoint of the last epoch it reported there, and
    # reported each later epoch once (Tune may drop rows of the lost process from result.json when it restarts)
    rows = [r for r in trial_rows(runs / "cluster")[trial] if r["node"] == survivor]
    epochs = [r["epoch"] for r in rows]  # (one more epoch may have been reported between the look and the removal)
    assert at_epoch < epochs[0] <= at_epoch + 1 + 1 and epochs == list(range(epochs[0], EPOCHS + 1))
    last = table[table["trial"] == rows[-1]["trial_id"]].iloc[0]
    train_rows = len(ray.get(splits["train"]))
    assert (table["cache_hits"] == EPOCHS * train_rows).all() and last["cache_hits"] == EPOCHS * train_rows
    assert (table["teacher_samples_computed"] == 0).all()  # stored mode: trials read tables, never run the teacher
    stats = summary["teachers"][teacher.name]
    assert stats["tables_built"] == EPOCHS and stats["samples_computed"] == EPOCHS * train_rows  # each table once
    assert len(list((cache / "store").glob("*.parquet"))) == 2 + EPOCHS  # decoded splits + tables, via the URI
