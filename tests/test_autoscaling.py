"""A sweep on an autoscaling cluster (Ray's ``ray.cluster_utils.AutoscalingCluster``: its fake provider starts and
stops worker raylets on this machine as the autoscaler asks), shaped as ``cluster.yaml``: a head with no CPUs and
a GPU worker type from zero. The autoscaler adds nodes for the teacher actors and the trials, the teacher actors
and the first trial share the first node's GPU (:func:`raykd.tune.resources.share_gpus`), the results complete,
and the workers go once idle. The sizing rules themselves are checked first, without Ray.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from ray.cluster_utils import AutoscalingCluster
from ray.train import ScalingConfig

from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig, TrainConfig
from raykd.tune.resources import TEACHER_GPU_SHARE, share_cpus, share_gpus, training_resources

EPOCHS = 3  # more than the teacher service's lead (TeacherServiceConfig.ahead = 1): its actors stay while trials run
BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=EPOCHS, batch_size=64, steps_per_epoch=4))
GPU_NODE = {"CPU": 2, "GPU": 1}  # cluster.yaml's gpu_1x in small: one GPU, CPUs for a teacher actor and a trial


def _gpu_sweep(**changes) -> SweepConfig:
    """What ``--gpus-per-worker 1`` makes: trial workers and teacher actors each asking for a whole GPU."""
    return SweepConfig(**{"scaling": ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"CPU": 1,
                                                                                                      "GPU": 1}),
                          "teacher_service": TeacherServiceConfig(num_gpus=1), **changes})


@pytest.mark.parametrize("actors", [1, 3])  # one teacher; MTKD's three
def test_teacher_actors_and_a_trial_share_one_gpu(actors) -> None:
    shared = share_gpus(_gpu_sweep(), actors)
    per_actor, worker = shared.teacher_service.num_gpus, shared.scaling.resources_per_worker["GPU"]
    assert per_actor * actors <= TEACHER_GPU_SHARE and worker == 1 - TEACHER_GPU_SHARE
    assert actors * per_actor + worker <= 1  # together on the first GPU node: no second node for the first trial
    assert 2 * worker > 1  # and never two trials on one GPU
    assert shared.scaling.use_gpu and shared.scaling.resources_per_worker["CPU"] == 1
    assert share_gpus(shared, actors) == shared  # applied twice, the same


def test_gpu_requests_that_already_share_or_cannot_are_kept() -> None:
    for sweep in (SweepConfig(), _gpu_sweep(teacher_service=TeacherServiceConfig(num_gpus=0)),  # no GPU asked
                  _gpu_sweep(teacher_service=TeacherServiceConfig(num_gpus=0.5),  # already fit one GPU
                             scaling=ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"GPU": 0.5})),
                  _gpu_sweep(scaling=ScalingConfig(num_workers=1, use_gpu=True,  # whole GPUs above one
                                                   resources_per_worker={"GPU": 2}))):
        assert share_gpus(sweep, 1) == sweep


def test_teacher_actors_share_the_cpus_of_one_node_when_they_would_not_fit_it() -> None:
    """Three 1-CPU teacher actors on a 2-CPU machine each ask for 2/3 of a CPU; where a node (or a node type the
    autoscaler can add) holds them all, or no node has CPUs yet, the sweep is unchanged."""
    laptop = ([{"CPU": 2.0}], [])
    shared = share_cpus(SweepConfig(), 3, laptop)
    assert shared.teacher_service.num_cpus == 0.6666 and 3 * shared.teacher_service.num_cpus <= 2
    assert share_cpus(shared, 3, laptop) == shared
    assert share_cpus(SweepConfig(), 2, laptop) == SweepConfig()
    assert share_cpus(SweepConfig(), 3, ([{"CPU": 0.0}], [{"CPU": 4.0, "GPU": 1.0}])) == SweepConfig()
    assert share_cpus(SweepConfig(), 3, ([{"CPU": 0.0}], None)) == SweepConfig()


def test_teacher_training_starts_the_gpu_node_type_not_the_largest() -> None:
    head, gpu_1x, gpu_4x = {"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 48.0, "GPU": 4.0}  # cluster.yaml's
    assert training_resources(0, ([head], [gpu_4x, gpu_1x])) == {"num_gpus": 1, "num_cpus": 4}
    assert training_resources(0.75, ([head], [gpu_4x, gpu_1x])) == {"num_gpus": 0.75, "num_cpus": 1}
    assert training_resources(0, ([{"CPU": 2.0}], [])) == {"num_cpus": 2, "num_gpus": 0}  # a laptop: every CPU
    assert training_resources(0, ([head], [{"CPU": 8.0}, {"CPU": 16.0}])) == {"num_cpus": 16, "num_gpus": 0}


# ------------------------------------------------------------------------------- the autoscaling cluster itself


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAutoscalingCluster(AutoscalingCluster):
    """Ray's AutoscalingCluster, made safe on a shared machine: its ``start`` begins with ``ray stop --force`` (every
    Ray of this user on the machine, other people's runs included) and its fake provider expects the GCS on port
    6379; this one runs in a temp dir and on ports of its own, and stops only the processes of that temp dir."""

    def __init__(self, worker_node_types: dict, idle_timeout_minutes: float) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rkas", dir="/tmp")  # short: Ray's socket paths live under it
        self.port = _free_port()
        super().__init__(head_resources={"CPU": 0}, worker_node_types=worker_node_types, autoscaler_v2=True,
                         idle_timeout_minutes=idle_timeout_minutes, max_workers=4)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        # Ray 2.60's wheel leaves out fake_multi_node/example.yaml, which the parent and the provider type
        # "fake_multinode" read their defaults from: the same provider class, named as an external provider
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FakeMultiNodeProvider

        ip = ray.util.get_node_ip_address()
        provider = f"{FakeMultiNodeProvider.__module__}.{FakeMultiNodeProvider.__name__}"
        return {"cluster_name": "raykd-autoscaling-test", "head_node_type": "ray.head.default", "auth": {},
                "provider": {"type": "external", "module": provider, "use_node_id_as_ip": True,
                             "disable_node_updaters": True,
                             "disable_launch_config_check": True, "launch_multiple": True,
                             "head_node_id": FAKE_HEAD_NODE_ID, "gcs_address": f"{ip}:{self.port}"},
                "available_node_types": {**worker_node_types, "ray.head.default": {
                    "resources": head_resources, "node_config": {}, "max_workers": 0}},
                "upscaling_speed": 1.0, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
                "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
                **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                                       "worker_setup_commands", "head_start_ray_commands",
                                       "worker_start_ray_commands")}, **config_kwargs}

    def start(self, _system_config=None, override_env=None) -> None:
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        config = Path(self.temp_dir) / "autoscaling.json"
        config.write_text(json.dumps(self._config))
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
               "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={self.port}",
                        f"--temp-dir={self.temp_dir}", "--num-cpus=0", f"--autoscaling-config={config}",
                        "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                        f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)

    @property
    def address(self) -> str:
        return f"{ray.util.get_node_ip_address()}:{self.port}"

    def processes(self) -> list[int]:
        """The ids of the processes that run this cluster (their command lines name its temp dir)."""
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if self.temp_dir.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def shutdown(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _workers() -> dict[str, dict[str, float]]:
    """Alive worker nodes (the head has no CPU) and their resources."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}


class NodeWatcher(threading.Thread):
    """Records every worker node seen alive and when the first appeared."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, dict[str, float]] = {}
        self.first: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            alive = _workers()
            if alive and self.first is None:
                self.first = time.time()
            self.seen.update(alive)


def _reload_auth() -> None:
    """This process read RAY_AUTH_MODE and the token when Ray was imported; make it read them again."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def autoscaling_cluster(monkeypatch, home: Path):
    """The cluster, token authentication on as ``cluster.yaml`` has it (one shared token for every node and this
    driver), this process connected as its driver (a context, not a fixture: the teacher is trained before). As
    ``ray up`` does on the head, the autoscaler's config is left in ``~/ray_bootstrap_config.yaml`` (``home``),
    where :mod:`raykd.tune.resources` reads the node types it can add (Ray 2.60 reports them to the GCS only
    under KubeRay)."""
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    _reload_auth()
    # one GPU node at most: the teacher actors and the trials must share it (with a whole GPU each, no trial
    # could start: the teacher's GPU would be held until trials reach its last epochs)
    nodes = LocalAutoscalingCluster({"gpu_1x": {"resources": dict(GPU_NODE), "node_config": {}, "min_workers": 0,
                                                "max_workers": 1}}, idle_timeout_minutes=0.1)
    try:
        (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(nodes._config))
        nodes.start()
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        monkeypatch.undo()
        _reload_auth()


def _teacher(tmp_path: Path):
    """A teacher trained on the demo data in this process, before the cluster: the sweep's workers are for the
    teacher actors and the trials."""
    from raykd.cli import main
    from raykd.teachers.spec import TeacherSpec

    out = tmp_path / "teacher"
    assert main(["train", "--data", "demo", "--model", "resnet8", "--image-size", "16", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "64", "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    return TeacherSpec.from_checkpoint(out)


@pytest.mark.slow
def test_a_sweep_scales_up_shares_the_first_gpu_node_and_scales_down(tmp_path, monkeypatch) -> None:
    teacher = _teacher(tmp_path)
    with autoscaling_cluster(monkeypatch, tmp_path) as nodes:
        _sweep_on(nodes, teacher, tmp_path)


def _sweep_on(nodes: LocalAutoscalingCluster, teacher, tmp_path: Path) -> None:
    from raykd.tune.sweep import run_sweep

    assert _workers() == {}  # workers from zero
    sweep = share_gpus(_gpu_sweep(name="autoscaling", methods=("kd",), num_samples=2, grace_period=EPOCHS, seeds=0,
                                  storage=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                                  teacher_service=TeacherServiceConfig(num_cpus=1, num_gpus=1, mode="stored")), 1)
    watcher = NodeWatcher()
    watcher.start()
    submitted = time.time()
    try:
        run_sweep(BASE, teacher, sweep)
    finally:
        watcher.done.set()
    table = pd.read_parquet(tmp_path / "runs" / "autoscaling" / "results.parquet")
    assert len(table) == 2 and (table["status"] == "ok").all() and (table["epochs"] == EPOCHS).all()
    (node,) = watcher.seen  # added from zero for the teacher actors and the trials
    assert set(table["node"]) == {node} and watcher.seen[node].get("GPU") == 1
    first_node, first_trial = watcher.first - submitted, table["started"].min() - submitted
    print(f"\nautoscaling: the worker node up {first_node:.1f} s after the sweep began, the first trial started "
          f"{first_trial:.1f} s after")
    deadline = time.time() + 120
    while _workers() and time.time() < deadline:  # idle workers go after idle_timeout_minutes (6 s)
        time.sleep(1)
    assert _workers() == {}, "idle workers were not removed"
    assert nodes.processes()  # the head is still up: only the workers went
