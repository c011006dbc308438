"""Ray's own log lines stay off the user's terminal: a local Ray started as the sweeps start it
(:func:`raykd.tune.spec.connect`, workers' output forwarded to the driver as Ray does by default), a teacher service
with its teacher actor made and a table computed, prints none of the ERROR notes Ray's C++ core worker logs for a
restartable actor whose constructor arguments are object-store references (``core_worker.cc``: "has constructor
arguments in the object store and max_restarts > 0", ray-project/ray#53727): the driver's for TeacherService, the
service's (forwarded) for TeacherActor; nor Ray's WARNING that it turned token authentication on by itself (raykd
chooses it: ``RAY_AUTH_MODE=token``, the same authentication). The program runs in a process of its own, with
``RAY_AUTH_MODE`` unset as on a user's machine, whose terminal output is read.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROGRAM = r"""
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch

from raykd.config import DataConfig, ModelConfig, OptimConfig, TeacherServiceConfig, TrainConfig
from raykd.models import create_model
from raykd.teachers.service import TeacherRequest, start_service, stop_service
from raykd.teachers.spec import TeacherSpec
from raykd.train.checkpoint import save_checkpoint
from raykd.tune.spec import connect
from raykd.tune.sweep import decoded_splits

work = Path(sys.argv[1])
base = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=1, batch_size=64))
connect()
splits = decoded_splits(base, str(work / "cache"))
torch.manual_seed(0)
kwargs = {"num_classes": 10}
path = save_checkpoint(work / "teacher", model=create_model("resnet8", **kwargs),
                       meta={"model": "resnet8", "model_kwargs": kwargs})
spec = TeacherSpec.from_checkpoint(path)
service = start_service([TeacherRequest(spec, ("logits",))], base.data, splits["train"], 1,
                        TeacherServiceConfig(mode="stored"), str(work / "store"), "noise")
try:
    ray.get(service.start.remote([0]))
    table = ray.get(ray.get(service.table.remote(spec.name, 0, 0, True))[0])
    rows = len(ray.get(splits["train"]))
    print(f"table rows {len(table.lookup(np.arange(rows))['logits'])} of {rows}", flush=True)
    time.sleep(3)  # Ray forwards the workers' output to the driver every second or so
finally:
    stop_service(service)
ray.shutdown()
"""


@pytest.mark.slow
def test_a_teacher_service_start_prints_none_of_rays_actor_restart_notes(tmp_path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("table rows ")]
    assert rows and rows[0].split()[2] == rows[0].split()[4], terminal[-4000:]  # the service and its actor worked
    notes = [line for line in terminal.splitlines()
             if "core_worker.cc" in line or "constructor arguments in the object store" in line
             or "Token authentication is enabled" in line]
    assert notes == []
