"""The autoscaling cluster the tests and ``bench/autoscaling.py`` run sweeps on: Ray's
``ray.cluster_utils.AutoscalingCluster`` (its fake provider starts and stops worker raylets on this machine as the
autoscaler asks), shaped as ``cluster.yaml``: a head with no CPUs, a GPU worker type from zero, token
authentication; and the small sweep they run on it."""
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

import ray
import yaml
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FakeMultiNodeProvider
from ray.cluster_utils import AutoscalingCluster
from ray.train import ScalingConfig

from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig, TrainConfig

EPOCHS = 3  # more than the teacher service's lead (TeacherServiceConfig.ahead = 1): its actors stay while trials run
BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=EPOCHS, batch_size=64, steps_per_epoch=4))
GPU_NODE = {"CPU": 2, "GPU": 1}  # cluster.yaml's gpu_1x in small: one GPU, CPUs for a teacher actor and a trial


def gpu_sweep(**changes) -> SweepConfig:
    """What ``--gpus-per-worker 1`` makes: trial workers and teacher actors each asking for a whole GPU."""
    return SweepConfig(**{"scaling": ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"CPU": 1,
                                                                                                      "GPU": 1}),
                          "teacher_service": TeacherServiceConfig(num_gpus=1), **changes})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BootingProvider(FakeMultiNodeProvider):
    """Ray's fake provider (worker raylets on this machine), with a boot time: a node is created ``boot_s``
    seconds (its provider config) after the autoscaler asks for it, as a cloud instance boots and runs its setup
    before its raylet joins. The autoscaler's process imports it by name (``autoscaling_harness.BootingProvider``,
    this folder on its ``PYTHONPATH``)."""

    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        time.sleep(float(self.provider_config.get("boot_s", 0)))
        super().create_node_with_resources_and_labels(node_config, tags, count, resources, labels)


class LocalAutoscalingCluster(AutoscalingCluster):
    """Ray's AutoscalingCluster, made safe on a shared machine: its ``start`` begins with ``ray stop --force`` (every
    Ray of this user on the machine, other people's runs included) and its fake provider expects the GCS on port
    6379; this one runs in a temp dir and on ports of its own, and stops only the processes of that temp dir."""

    def __init__(self, worker_node_types: dict, idle_timeout_minutes: float, boot_s: float = 0) -> None:
        self.boot_s = boot_s
        self.temp_dir = tempfile.mkdtemp(prefix="rkas", dir="/tmp")  # short: Ray's socket paths live under it
        self.port = free_port()
        super().__init__(head_resources={"CPU": 0}, worker_node_types=worker_node_types, autoscaler_v2=True,
                         idle_timeout_minutes=idle_timeout_minutes, max_workers=4)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        # Ray 2.60's wheel leaves out fake_multi_node/example.yaml, which the parent and the provider type
        # "fake_multinode" read their defaults from: the same provider class (with a boot time), named as an
        # external provider
        ip = ray.util.get_node_ip_address()
        return {"cluster_name": "raykd-autoscaling-test", "head_node_type": "ray.head.default", "auth": {},
                "provider": {"type": "external", "module": f"{__name__}.{BootingProvider.__name__}",
                             "boot_s": self.boot_s, "use_node_id_as_ip": True,
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
        config = Path(self.temp_dir) / "autoscaling.json"
        config.write_text(json.dumps(self._config))
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
               "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={self.port}",
                        f"--temp-dir={self.temp_dir}", "--num-cpus=0", f"--autoscaling-config={config}",
                        "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
                        f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
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


def worker_nodes() -> dict[str, dict[str, float]]:
    """Alive worker nodes (the head has no CPU) and their resources."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}


class NodeWatcher(threading.Thread):
    """Records every worker node seen alive, its resources and when it was first seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, dict[str, float]] = {}
        self.up: dict[str, float] = {}  # node id -> time first seen alive
        self.done = threading.Event()

    @property
    def first(self) -> float | None:
        """When the first worker node was seen alive."""
        return min(self.up.values(), default=None)

    def run(self) -> None:
        while not self.done.wait(0.5):
            alive = worker_nodes()
            now = time.time()
            self.up.update({node: now for node in alive if node not in self.up})
            self.seen.update(alive)


def reload_auth() -> None:
    """This process read RAY_AUTH_MODE and the token when Ray was imported; make it read them again."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def autoscaling_cluster(monkeypatch, home: Path, gpu_nodes: int = 1, boot_s: float = 0):
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
    reload_auth()
    # ``gpu_nodes`` GPU nodes at most (the test: one, so the teacher actors and the trials must share it; with a
    # whole GPU each no trial could start, the teacher's GPU held until trials reach its last epochs)
    nodes = LocalAutoscalingCluster({"gpu_1x": {"resources": dict(GPU_NODE), "node_config": {}, "min_workers": 0,
                                                "max_workers": gpu_nodes}}, idle_timeout_minutes=0.1,
                                    boot_s=boot_s)
    try:
        (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(nodes._config))
        nodes.start()
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        monkeypatch.undo()
        reload_auth()


def train_teacher(tmp_path: Path):
    """A teacher trained on the demo data in this process, before the cluster: the sweep's workers are for the
    teacher actors and the trials."""
    from raykd.cli import main
    from raykd.teachers.spec import TeacherSpec

    out = tmp_path / "teacher"
    assert main(["train", "--data", "demo", "--model", "resnet8", "--image-size", "16", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "64", "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    return TeacherSpec.from_checkpoint(out)


def sweep_on_cluster(sweep: SweepConfig, teacher):
    """Run ``sweep`` (two ``kd`` trials of :data:`EPOCHS` epochs, a stored teacher) from zero workers; return its
    results table, the :class:`NodeWatcher` that saw the workers come, and the time it was submitted."""
    import pandas as pd

    from raykd.tune.sweep import run_sweep

    assert worker_nodes() == {}  # workers from zero
    watcher = NodeWatcher()
    watcher.start()
    submitted = time.time()
    try:
        run_sweep(BASE, teacher, sweep)
    finally:
        watcher.done.set()
    return pd.read_parquet(Path(sweep.storage) / sweep.name / "results.parquet"), watcher, submitted


def small_sweep(tmp_path: Path, name: str = "autoscaling") -> SweepConfig:
    """Two ``kd`` trials with whole GPUs asked (``--gpus-per-worker 1``), the teacher stored."""
    return gpu_sweep(name=name, methods=("kd",), num_samples=2, grace_period=EPOCHS, seeds=0,
                     storage=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                     teacher_service=TeacherServiceConfig(num_cpus=1, num_gpus=1, mode="stored"))
