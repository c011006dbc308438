"""A sweep's teacher passes two ways (issue #12 asked to consider Ray Data): the teacher service's own actor loop
(chunks of rows spread over its long-lived teacher actors, a bounded number in flight) against Ray Data's
``map_batches`` over an actor pool running the same teacher on the same views, one execution per epoch. Both end
each epoch with its table saved in the store. Printed: seconds to the first table (start-up included) and per
further table (the steady state of a sweep), and rows/s, for both.

    .venv/bin/python bench/teacher_pass.py [--rows 10000] [--epochs 3] [--image-size 32] [--teacher resnet8x4]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from raykd.config import DataConfig, TeacherServiceConfig
from raykd.data.arrays import ImageArrays
from raykd.data.batches import ClassificationBatches
from raykd.data.store import Store
from raykd.models import create_model
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service
from raykd.teachers.sources import run_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable, table_key
from raykd.train.checkpoint import save_checkpoint


class Teacher:
    """Ray Data's callable class: the frozen teacher on the batch's views (the service's TeacherActor.compute)."""

    def __init__(self, spec: TeacherSpec, weights: bytes, data: DataConfig, arrays: ImageArrays, view: int) -> None:
        self.model = spec.build("cpu", weights)
        self.batches = ClassificationBatches(arrays, data, seed=0)
        self.view = view

    def __call__(self, batch: dict) -> dict:
        x = self.batches.batch(batch["id"], self.view, torch.device("cpu"))["hr"]
        logits = run_teacher(self.model, x, ("logits",))["logits"].half().numpy()
        return {"id": batch["id"], "logits": list(logits)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--teacher", default="resnet8x4")
    p.add_argument("--replicas", type=int, default=1)
    args = p.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    s = args.image_size
    arrays = ImageArrays(rng.integers(0, 255, (args.rows, s, s, 3), dtype=np.uint8),
                         rng.integers(0, 10, args.rows).astype(np.int64), tuple(str(c) for c in range(10)), "bench")
    data = DataConfig(dataset="bench", image_size=s)
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        save_checkpoint(Path(tmp) / "teacher", model=create_model(args.teacher, num_classes=10),
                        meta={"model": args.teacher, "model_kwargs": {"num_classes": 10}})
        spec = TeacherSpec.from_checkpoint(Path(tmp) / "teacher")
        ref = ray.put(arrays)

        started, service_t = time.perf_counter(), []
        service = start_service([TeacherRequest(spec, ("logits",))], data, ref, args.epochs,
                                TeacherServiceConfig(replicas=args.replicas, ahead=0, mode="stored"),
                                str(Path(tmp) / "service"), "bench")
        source = ServiceClient(service, spec.name, ("logits",)).source("cls", 4, 0)
        for epoch in range(args.epochs):  # one trial training every epoch: the service makes each table once
            source.begin_epoch(epoch)
            service_t.append(time.perf_counter() - started)
        ray.get(service.shutdown.remote())

        started, data_t = time.perf_counter(), []
        weights = spec.weights_bytes()
        for epoch in range(args.epochs):
            out = (ray.data.range(args.rows)
                   .map_batches(Teacher, fn_constructor_args=(spec, weights, data, arrays, epoch), batch_size=256,
                                concurrency=args.replicas, num_cpus=1)
                   .take_all())
            out.sort(key=lambda row: row["id"])
            TeacherTable.save(Store(Path(tmp) / "data"), table_key(spec.identity(), {"bench": 1}, ["logits"], epoch),
                              np.array([r["id"] for r in out]), {"logits": np.stack([r["logits"] for r in out])},
                              {"teacher": spec.name})
            data_t.append(time.perf_counter() - started)
    ray.shutdown()
    print(f"{args.epochs} epochs' tables of {args.rows} rows, {args.teacher} at {s} px, {args.replicas} teacher "
          "actor(s):")
    for name, times in (("teacher service (actor loop)", service_t), ("Ray Data map_batches", data_t)):
        steady = (times[-1] - times[0]) / max(len(times) - 1, 1)
        print(f"  {name:30s} first table {times[0]:6.1f} s, then {steady:6.1f} s per table "
              f"({args.rows / steady:6.0f} rows/s); all {times[-1]:.1f} s")


if __name__ == "__main__":
    main()
