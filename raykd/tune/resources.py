"""Requests no node can hold are refused at once, with the numbers.

A Ray task, actor or placement-group bundle runs on one node, so a request for more CPUs/GPUs than any node has
waits forever (Ray and Tune only warn). The rule: a request must fit one *alive* node, or one *node type the
autoscaler can launch* (``cluster.yaml``'s ``available_node_types`` with ``max_workers > 0``, as the autoscaler
reports them to the GCS or as ``ray up`` left them on the head); otherwise it is refused before any work starts,
naming the request, the largest nodes, and the setting that asks for it. A cluster without an autoscaler (a local
Ray, ``ray start`` by hand) is judged by its alive nodes alone; one whose autoscaler's node types cannot be read
is not judged (the autoscaler decides).

Two sizing rules live here too: teacher actors take a share of a GPU that a trial worker leaves free
(:func:`share_gpus`), so the first GPU node holds the teachers and a trial at once; teacher training asks for one
GPU of the smallest GPU node (type) when the cluster has or can add one (:func:`training_resources`). And what a
local Ray is started with on a loaded machine (:data:`LOCAL_START_CONFIG`) and its authentication
(:func:`choose_token_auth`), with the processes a failed start leaves (:func:`descendants`, :func:`stop_processes`).
"""
from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["InsufficientResources", "node_shapes", "check_fits", "check_sweep_resources", "BOOTSTRAP_CONFIG",
           "TEACHER_GPU_SHARE", "share_gpus", "share_cpus", "training_resources", "LOCAL_START_CONFIG", "choose_token_auth",
           "descendants", "stop_processes"]

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # what `ray up` writes on the head for its autoscaler


class InsufficientResources(ValueError):
    """A request exceeds every node the cluster has or can launch; the message gives the numbers."""


def _launchable() -> list[dict[str, float]] | None:
    """The resources of every node type the autoscaler may start: ``[]`` without an autoscaler, ``None`` when one
    runs but its node types are unknown (then nothing is refused). Read from the cluster config the autoscaler
    reports to the GCS (autoscaler v2, KubeRay), else from the config ``ray up`` leaves on the head for its
    autoscaler (:data:`BOOTSTRAP_CONFIG`; the driver runs on the head under ``ray job submit``)."""
    from ray._private import state

    try:
        config = state.state.get_cluster_config()
    except Exception:  # an older GCS: fall back on the launcher's file
        config = None
    if config is not None:
        return [dict(group.resources) for group in config.node_group_configs if group.max_count != 0]
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        import yaml

        launcher = yaml.safe_load(path.read_text())
        types = launcher.get("available_node_types") or {}
        out = []
        for name, node_type in types.items():
            if name == launcher.get("head_node_type") or not node_type.get("max_workers", 0):
                continue
            if "resources" not in node_type:
                return None
            out.append({key: float(value) for key, value in node_type["resources"].items()})
        return out
    except Exception:  # unreadable: an autoscaler runs, its node types are unknown
        return None


def node_shapes() -> tuple[list[dict[str, float]], list[dict[str, float]] | None]:
    """(total resources of every alive node, resources of every node type the autoscaler can launch, or ``None``
    when an autoscaler runs whose node types are unknown)."""
    import ray  # on use: the sweeps' --help path imports this module, and Ray takes seconds to import

    alive = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    return alive, _launchable()


def _fits(request: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(amount <= node.get(name, 0.0) + 1e-9 for name, amount in request.items() if amount > 0)


def _describe(nodes: list[dict[str, float]]) -> str:
    shapes = sorted({(node.get("CPU", 0.0), node.get("GPU", 0.0)) for node in nodes}, reverse=True)
    return ", ".join(f"{cpu:g} CPU/{gpu:g} GPU" for cpu, gpu in shapes[:4]) or "none"


def check_fits(request: Mapping[str, float], what: str, setting: str,
               shapes: tuple[list[dict[str, float]], list[dict[str, float]] | None] | None = None) -> None:
    """Raise :class:`InsufficientResources` unless ``request`` (resource name -> amount, for one process) fits
    one alive node or one node type the autoscaler can launch. ``what`` names the process, ``setting`` the
    flag/field that sets the request."""
    alive, launchable = shapes if shapes is not None else node_shapes()
    if launchable is None or any(_fits(request, node) for node in alive + launchable):
        return
    wanted = ", ".join(f"{amount:g} {name}" for name, amount in request.items() if amount > 0)
    scaling = f"; node types the autoscaler can add: {_describe(launchable)}" if launchable else \
        " (no autoscaler: only these nodes count)"
    raise InsufficientResources(f"{what} asks for {wanted}, more than any node has: nodes {_describe(alive)}"
                                f"{scaling}. Lower {setting}, or add a node that large")


def _per_worker(scaling: Any) -> dict[str, float]:
    per_worker = dict(scaling.resources_per_worker or {})
    per_worker.setdefault("CPU", 1.0)
    if scaling.use_gpu:
        per_worker.setdefault("GPU", 1.0)
    return {name: float(amount) for name, amount in per_worker.items()}


def check_sweep_resources(sweep: Any) -> None:
    """Refuse, before any data, teacher or Tune work, a sweep whose trial workers or teacher actors no node can
    hold (:class:`raykd.config.SweepConfig`; Ray must be initialised)."""
    shapes = node_shapes()
    check_fits(_per_worker(sweep.scaling), "a trial worker (SweepConfig.scaling)",
               "--cpus-per-worker/--gpus-per-worker (ScalingConfig.resources_per_worker)", shapes)
    teachers = sweep.teacher_service
    check_fits({"CPU": teachers.num_cpus, "GPU": teachers.num_gpus}, "a teacher actor (SweepConfig.teacher_service)",
               "TeacherServiceConfig.num_cpus/num_gpus (--gpus-per-worker sets its GPU share)", shapes)


TEACHER_GPU_SHARE = 0.25
"""The share of one GPU that a sweep's teacher actors ask for together when trial workers ask for GPUs. A Ray
scheduling share, not a compute limit: with it a trial worker that asked for a whole GPU asks for the rest
(0.75), so the teachers and one trial fit the first GPU node at once, and no GPU holds two such trials. Ray does
not divide a GPU's time by these numbers (both processes see the whole device); the value only decides what may
be placed together: any share below 1/2 keeps one trial per GPU. A quarter leaves the trial the larger claim
because the teachers only run inference (fp16, no backward pass); it is not a measured split of GPU time."""


def share_gpus(sweep: Any, actors: int) -> Any:
    """``sweep`` (a :class:`raykd.config.SweepConfig`) with GPU requests that let its ``actors`` teacher actors
    and one trial worker share a GPU: the actors split :data:`TEACHER_GPU_SHARE` and a worker asking for one GPU
    asks for the rest. Unchanged where the teachers ask for no GPU, the workers for none or for several each
    (Ray's shares above 1 are whole GPUs), or where both already fit one GPU."""
    worker = _per_worker(sweep.scaling).get("GPU", 0.0)
    teachers = sweep.teacher_service.num_gpus
    if not teachers or not worker or worker > 1 or actors * teachers + worker <= 1 + 1e-9:
        return sweep
    together = min(actors * teachers, TEACHER_GPU_SHARE)
    per_actor = int(together / actors * 1e4) / 1e4  # Ray counts GPU shares in units of 1e-4
    per_worker = {**dict(sweep.scaling.resources_per_worker or {}), "GPU": min(worker, 1 - together)}
    return dataclasses.replace(sweep, teacher_service=dataclasses.replace(sweep.teacher_service, num_gpus=per_actor),
                               scaling=dataclasses.replace(sweep.scaling, resources_per_worker=per_worker))


def share_cpus(sweep: Any, actors: int,
               shapes: tuple[list[dict[str, float]], list[dict[str, float]] | None] | None = None) -> Any:
    """``sweep`` with teacher actors that fit one node together: where ``actors`` actors of the teacher service's
    ``num_cpus`` would need more CPUs than the largest node (alive, or a type the autoscaler can add) has, each asks
    for an equal share of that node's. The service probes every teacher on an actor of its own before it releases
    any, so three 1-CPU actors (MTKD's stage 2: the best teacher, FAKD's name for it, the aggregate) on a 2-CPU
    machine would wait for each other forever. Unchanged where they fit or no node has CPUs."""
    alive, launchable = shapes if shapes is not None else node_shapes()
    largest = max((node.get("CPU", 0.0) for node in alive + (launchable or [])), default=0.0)
    service = sweep.teacher_service
    if not largest or actors * service.num_cpus <= largest + 1e-9:
        return sweep
    per_actor = int(largest / actors * 1e4) / 1e4  # Ray counts shares in units of 1e-4
    return dataclasses.replace(sweep, teacher_service=dataclasses.replace(service, num_cpus=per_actor))


def training_resources(gpus: float, shapes: tuple[list[dict[str, float]], list[dict[str, float]] | None] | None
                       = None) -> dict[str, float]:
    """What a teacher-training task asks for: ``gpus`` (the trials' GPU share) and one CPU when given; else, on a
    cluster that has or can add a GPU node, one GPU and the CPUs of the smallest GPU node (type), so that training
    starts the node the trials use rather than the largest one; else every CPU of the largest node (a task runs on
    one node)."""
    if gpus:
        check_fits({"CPU": 1, "GPU": gpus}, "teacher training", "--gpus-per-worker", shapes)
        return {"num_gpus": gpus, "num_cpus": 1}
    alive, launchable = shapes if shapes is not None else node_shapes()
    nodes = alive + (launchable or [])
    gpu_nodes = sorted((n for n in nodes if n.get("GPU", 0.0) >= 1), key=lambda n: (n["GPU"], n.get("CPU", 0.0)))
    if gpu_nodes and gpu_nodes[0].get("CPU", 0.0) >= 1:
        return {"num_gpus": 1, "num_cpus": int(gpu_nodes[0]["CPU"])}
    largest = max((n.get("CPU", 0.0) for n in nodes), default=1.0)
    if largest < 1:
        raise InsufficientResources(f"no node of this cluster has a CPU to train the teacher on (nodes: "
                                    f"{_describe(nodes)}); add a CPU node, or give a trained teacher with --teacher")
    return {"num_cpus": int(largest), "num_gpus": 0}


LOCAL_START_CONFIG: dict[str, int] = {
    # the raylet's wait for its runtime-env agent to answer (Ray's default 30 s, src/ray/common/ray_config_def.h):
    # an agent still importing on a loaded machine misses it and takes the raylet down with it
    "agent_register_timeout_ms": 120_000,
    # failed health checks in a row (3 s apart, 10 s timeout each) before the GCS declares the raylet dead (Ray's
    # default 5: 15-50 s of a raylet too busy to answer, as seen on a loaded 2-core machine; same file)
    "health_check_failure_threshold": 20,
}
"""Ray's ``_system_config`` for a local Ray (raykd.tune.spec.connect). Not settable, in Ray 2.60: the raylet's
15 s wait for the dashboard agent's port files (ray-project/ray#65983); a start that misses it is retried."""


def choose_token_auth() -> None:
    """Before a local Ray starts: token authentication, chosen here (``RAY_AUTH_MODE=token``) where the user left
    ``RAY_AUTH_MODE`` unset, rather than by Ray's default. The outcome is the same (Ray 2.60 turns token
    authentication on for a ``ray.init`` that starts a cluster, ray/_private/authentication/
    authentication_token_setup.py, using or writing ``~/.ray/auth_token``) without the WARNING it prints on the
    terminal when it chose for the user ("Token authentication is enabled for this Ray cluster. Set
    RAY_AUTH_MODE=disabled to opt out"). A user's ``RAY_AUTH_MODE`` (``disabled`` included) is left as it is.
    Ray read the variable when it was imported: its config is read again, as Ray does when it sets it."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def descendants() -> set[int]:
    """The process ids below this process (from Linux's /proc; empty where there is none): after a failed
    ``ray.init``, those that were not there before are what the failed start left running."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def stop_processes(pids: Iterable[int]) -> None:
    """Kill the processes ``pids`` (by id; those already gone are skipped)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
