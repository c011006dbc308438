"""One epoch's teacher pass two ways (issue #12 asked to consider Ray Data): the teacher service's own actor loop
(chunks of rows spread over its teacher actors, a bounded number in flight) against Ray Data's ``map_batches``
over an actor pool running the same teacher on the same views. Both end with the table saved in the store.
Printed: seconds per table (median of ``--repeats``, each on a fresh store) and rows/s for both.

    .venv/bin/python bench/teacher_pass.py [--rows 10000] [--image-size 32] [--teacher resnet8x4] [--replicas 1]
"""
from __future__ import annotations

import argparse
import statistics
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
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--teacher", default="resnet8x4")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
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
        service_s, data_s = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            service = start_service([TeacherRequest(spec, ("logits",))], data, ref, 1,
                                    TeacherServiceConfig(replicas=args.replicas, ahead=0),
                                    str(Path(tmp) / f"service-{repeat}"), f"bench-{repeat}")
            source = ServiceClient(service, spec.name, ("logits",)).source("cls", 4, 0)
            source.begin_epoch(0)
            service_s.append(time.perf_counter() - started)
            ray.get(service.shutdown.remote())
            ray.kill(service)

            started = time.perf_counter()
            weights = spec.weights_bytes()
            out = (ray.data.range(args.rows)
                   .map_batches(Teacher, fn_constructor_args=(spec, weights, data, arrays, 0), batch_size=256,
                                concurrency=args.replicas, num_cpus=1)
                   .take_all())
            out.sort(key=lambda row: row["id"])
            TeacherTable.save(Store(Path(tmp) / f"data-{repeat}"), table_key(spec.identity(), {"bench": repeat},
                                                                              ["logits"], 0),
                              np.array([r["id"] for r in out]), {"logits": np.stack([r["logits"] for r in out])},
                              {"teacher": spec.name})
            data_s.append(time.perf_counter() - started)
    ray.shutdown()
    print(f"one epoch's table of {args.rows} rows, {args.teacher} at {s} px, {args.replicas} teacher actor(s):")
    for name, times in (("teacher service (actor loop)", service_s), ("Ray Data map_batches", data_s)):
        median = statistics.median(times)
        print(f"  {name:30s} {median:6.1f} s  ({args.rows / median:6.0f} rows/s; runs {', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
