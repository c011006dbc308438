"""Load test of the teacher service (stored mode): many clients ask for every epoch's table at once.

Each client does what a trial does through ``ServiceClient``: ask the service for epoch ``e``'s table
(``TeacherService.table``, which also plans the ``ahead`` epochs beyond it) and fetch it from the object store, for
``e = 0 .. epochs-1``; all clients start together (a barrier). Two rounds: the first from a cold start (the
service has just started, as at the start of a sweep: epoch 0's requests all wait on one computation, later ones
race the producer), the second with every table made (restarted or late trials). Printed per round: requests
answered and lost (an error, a wrong or short table), whether every client got the same table per epoch, and
latency percentiles (p50/p90/p99/max) for all requests, for those that had to wait for a table being made (cold)
and for those served a table that existed (warm); and how many tables the service computed (one per epoch, however
many clients). Run from the repository root:

    .venv/bin/python bench/service_load.py [--clients 64] [--epochs 4] [--clients-as threads|tasks]

``threads`` (the default) runs the clients as threads of this driver, each with its own requests in flight;
``tasks`` runs each as a Ray task (a process each: for machines with a core per few clients).
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from raykd.config import DataConfig, TeacherServiceConfig, TrainConfig
from raykd.models import create_model
from raykd.teachers.service import TeacherRequest, start_service, stop_service
from raykd.teachers.spec import TeacherSpec
from raykd.train.checkpoint import save_checkpoint
from raykd.tune.sweep import decoded_splits


def ask(service, teacher: str, seed: int, epochs: int, rows: int) -> list[tuple[int, float, float, str]]:
    """One client: (epoch, seconds to the table, when asked, table key) per epoch; raises on a wrong table."""
    out = []
    for epoch in range(epochs):
        asked = time.time()
        table = ray.get(ray.get(service.table.remote(teacher, seed, epoch, True))[0])
        took = time.time() - asked
        if len(table.lookup(np.arange(rows))["logits"]) != rows:
            raise RuntimeError(f"epoch {epoch}: short table {table.key}")
        out.append((epoch, took, asked, table.key))
    return out


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"p50 {p50 * 1e3:7.1f} ms  p90 {p90 * 1e3:7.1f} ms  p99 {p99 * 1e3:7.1f} ms  max {max(values) * 1e3:7.1f} ms"


def run_round(service, teacher: str, args: argparse.Namespace, rows: int
              ) -> tuple[list[list[tuple[int, float, float, str]] | BaseException], float]:
    """Every client asks for every epoch once, all starting together; (each client's answers or error, wall s)."""
    results: list[list[tuple[int, float, float, str]] | BaseException] = []
    started = time.time()
    if args.clients_as == "threads":
        barrier = threading.Barrier(args.clients)

        def client() -> None:
            barrier.wait()
            try:
                results.append(ask(service, teacher, 0, args.epochs, rows))
            except BaseException as err:  # counted as lost
                results.append(err)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        remote = ray.remote(num_cpus=0)(ask)
        for ref in [remote.remote(service, teacher, 0, args.epochs, rows) for _ in range(args.clients)]:
            try:
                results.append(ray.get(ref))
            except BaseException as err:
                results.append(err)
    return results, time.time() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--teacher-model", default="resnet8")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--replicas", type=int, default=1, help="teacher actors")
    p.add_argument("--clients-as", choices=("threads", "tasks"), default="threads")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    args = p.parse_args()

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    data = DataConfig(dataset="demo", image_size=args.image_size)
    with tempfile.TemporaryDirectory(prefix="raykd-load-") as tmp:
        work = Path(tmp)
        splits = decoded_splits(TrainConfig(data=data), str(work / "cache"))
        rows = len(ray.get(splits["train"]))
        torch.manual_seed(0)  # outputs do not matter here, only their shape and cost: untrained weights
        kwargs = {"num_classes": 10}
        teacher = TeacherSpec.from_checkpoint(save_checkpoint(
            work / "teacher", model=create_model(args.teacher_model, **kwargs),
            meta={"model": args.teacher_model, "model_kwargs": kwargs}))
        config = TeacherServiceConfig(mode="stored", replicas=args.replicas, keep_epochs=args.epochs)
        service = start_service([TeacherRequest(teacher, ("logits",))], data, splits["train"], args.epochs, config,
                                str(work / "store"), "load")
        ray.get(service.start.remote([0]))  # as run_sweep does before trials start: the actors start now
        rounds = [run_round(service, teacher.name, args, rows) for _ in range(2)]
        stats = ray.get(service.statistics.remote())[teacher.name]
        produced = ray.get(service.produced.remote(teacher.name))
        stop_service(service)

    ready = {view: t for (_, view), t in produced.items()}  # cls: view == epoch
    print(f"teacher service load: {args.clients} clients ({args.clients_as}) x {args.epochs} epochs, "
          f"{args.teacher_model} at {args.image_size} px, {rows} rows per table, {args.replicas} teacher actor(s); "
          f"tables computed {stats['tables_built']} (of {args.epochs}), teacher rows {stats['samples_computed']}")
    for label, (results, wall) in zip(("round 1: from a cold start", "round 2: every table made"), rounds):
        answers = [a for r in results if not isinstance(r, BaseException) for a in r]
        errors = [r for r in results if isinstance(r, BaseException)]
        expected = args.clients * args.epochs
        keys = {epoch: {key for e, _, _, key in answers if e == epoch} for epoch in range(args.epochs)}
        cold = [took for epoch, took, asked, _ in answers if asked < ready[epoch]]
        warm = [took for epoch, took, asked, _ in answers if asked >= ready[epoch]]
        print(f"{label}: answered {len(answers)}/{expected}, lost {expected - len(answers)}"
              + (f" (first error: {errors[0]!r})" if errors else "")
              + f"; one table per epoch for all clients: {all(len(k) == 1 for k in keys.values())}; "
              f"wall {wall:.1f} s, {len(answers) / wall:.0f} tables/s")
        print(f"  all  ({len(answers):4d}): {percentiles([a[1] for a in answers])}")
        print(f"  cold ({len(cold):4d}): {percentiles(cold)}   (asked before the table existed)")
        print(f"  warm ({len(warm):4d}): {percentiles(warm)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
