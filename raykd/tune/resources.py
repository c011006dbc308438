"""Requests no node can hold are refused at once, with the numbers.

A Ray task, actor or placement-group bundle runs on one node, so a request for more CPUs/GPUs than any node has
waits forever (Ray and Tune only warn). The rule: a request must fit one *alive* node, or one *node type the
autoscaler can launch* (``cluster.yaml``'s ``available_node_types`` with ``max_workers > 0``, as the autoscaler
reports them to the GCS or as ``ray up`` left them on the head); otherwise it is refused before any work starts,
naming the request, the largest nodes, and the setting that asks for it. A cluster without an autoscaler (a local
Ray, ``ray start`` by hand) is judged by its alive nodes alone; one whose autoscaler's node types cannot be read
is not judged (the autoscaler decides).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

__all__ = ["InsufficientResources", "node_shapes", "check_fits", "check_sweep_resources", "BOOTSTRAP_CONFIG"]

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
    teachers = sweep.teachers
    check_fits({"CPU": teachers.num_cpus, "GPU": teachers.num_gpus}, "a teacher actor (SweepConfig.teachers)",
               "TeacherServiceConfig.num_cpus/num_gpus (--gpus-per-worker sets its GPU share)", shapes)
