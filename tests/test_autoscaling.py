"""A sweep on an autoscaling cluster (Ray's ``ray.cluster_utils.AutoscalingCluster``: its fake provider starts and
stops worker raylets on this machine as the autoscaler asks), shaped as ``cluster.yaml``: a head with no CPUs and
a GPU worker type from zero. The autoscaler adds nodes for the teacher actors and the trials, the teacher actors
and the first trial share the first node's GPU (:func:`raykd.tune.resources.share_gpus`), the results complete,
and the workers go once idle. The sizing rules themselves are checked first, without Ray.
"""
from __future__ import annotations

import time

import pytest
from autoscaling_harness import (EPOCHS, autoscaling_cluster, gpu_sweep, small_sweep,
                                 sweep_on_cluster, train_teacher, worker_nodes)

from ray.train import ScalingConfig

from raykd.config import SweepConfig, TeacherServiceConfig
from raykd.tune.resources import TEACHER_GPU_SHARE, share_cpus, share_gpus, training_resources


@pytest.mark.parametrize("actors", [1, 3])  # one teacher; MTKD's three
def test_teacher_actors_and_a_trial_share_one_gpu(actors) -> None:
    shared = share_gpus(gpu_sweep(), actors)
    per_actor, worker = shared.teacher_service.num_gpus, shared.scaling.resources_per_worker["GPU"]
    assert per_actor * actors <= TEACHER_GPU_SHARE and worker == 1 - TEACHER_GPU_SHARE
    assert actors * per_actor + worker <= 1  # together on the first GPU node: no second node for the first trial
    assert 2 * worker > 1  # and never two trials on one GPU
    assert shared.scaling.use_gpu and shared.scaling.resources_per_worker["CPU"] == 1
    assert share_gpus(shared, actors) == shared  # applied twice, the same


def test_gpu_requests_that_already_share_or_cannot_are_kept() -> None:
    for sweep in (SweepConfig(), gpu_sweep(teacher_service=TeacherServiceConfig(num_gpus=0)),  # no GPU asked
                  gpu_sweep(teacher_service=TeacherServiceConfig(num_gpus=0.5),  # already fit one GPU
                             scaling=ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"GPU": 0.5})),
                  gpu_sweep(scaling=ScalingConfig(num_workers=1, use_gpu=True,  # whole GPUs above one
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


@pytest.mark.slow
def test_a_sweep_scales_up_shares_the_first_gpu_node_and_scales_down(tmp_path, monkeypatch) -> None:
    teacher = train_teacher(tmp_path)
    with autoscaling_cluster(monkeypatch, tmp_path) as nodes:
        sweep = share_gpus(small_sweep(tmp_path), 1)
        table, watcher, submitted = sweep_on_cluster(sweep, teacher)
        assert len(table) == 2 and (table["status"] == "ok").all() and (table["epochs"] == EPOCHS).all()
        (node,) = watcher.seen  # added from zero for the teacher actors and the trials
        assert set(table["node"]) == {node} and watcher.seen[node].get("GPU") == 1
        first_node, first_trial = watcher.first - submitted, table["started"].min() - submitted
        print(f"\nautoscaling: the worker node up {first_node:.1f} s after the sweep began, the first trial "
              f"started {first_trial:.1f} s after")
        deadline = time.time() + 120
        while worker_nodes() and time.time() < deadline:  # idle workers go after idle_timeout_minutes (6 s)
            time.sleep(1)
        assert worker_nodes() == {}, "idle workers were not removed"
        assert nodes.processes()  # the head is still up: only the workers went
