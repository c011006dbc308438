"""A Ray Tune + Optuna sweep over distillation methods and their hyperparameters.

The teachers' outputs are prepared once by the teacher service before any trial starts (cache hit, or one
pass of the teacher actors), put in Ray's object store and handed to every trial with ``tune.with_parameters``.
Each trial trains one student: directly in the trial when it has one worker (less start-up), or through a
``TorchTrainer`` with several DDP workers (Ray Train V2: the trial function launches the trainer and relays its
reports with ``TuneReportCallback``). ASHA stops weak trials early; crashed trials are retried from their last
checkpoint; an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from raykd import telemetry
from raykd.methods import create_method
from raykd.teachers.pool import TeacherHandle, TeacherService, TrialSources
from raykd.teachers.specs import TeacherSpec
from raykd.train.config import TrainConfig
from raykd.train.loop import train
from raykd.train.tasks import TASKS, build_task
from raykd.tune.report import write_report
from raykd.tune.spaces import SPACES, DefineByRun, check_methods, default_points, trial_method


DRIVER_CPU = 0.01  # what a multi-worker trial's own process asks for: it only drives its TorchTrainer


@dataclass
class SweepConfig:
    name: str = "sweep"
    methods: list[str] = field(default_factory=lambda: ["none", "kd", "dkd", "figkd", "dfd"])
    num_samples: int = 16
    metric: str | None = None  # default: the task's (val_top1, val_psnr)
    mode: str = "max"
    workers_per_trial: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_concurrent_trials: int | None = None  # default: as many as the cluster's resources hold
    grace_period: int = 1  # ASHA: epochs every trial gets before it can be stopped
    max_failures: int = 2  # retries of a crashed trial (from its last checkpoint)
    storage: str = "runs"  # results go to <storage>/<name>/
    cache_dir: str = "~/.cache/raykd"
    teacher_mode: str = "auto"  # "auto", "cached" or "live"
    teacher_replicas: int = 1
    teacher_gpus: float = 0
    resume: bool = False
    seed: int = 0
    verbose: int = 1

    @property
    def directory(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name


def trial_config(base: dict[str, Any], config: dict[str, Any]) -> TrainConfig:
    method, params = trial_method(config)
    return TrainConfig.from_dict({**base, "method": method, "method_params": params, "check_data": False})


def run_trial(config: dict[str, Any], *, base: dict[str, Any], teachers: dict[str, TeacherHandle],
              workers_per_trial: int, cpus_per_worker: float, gpus_per_worker: float, max_failures: int) -> None:
    """One Tune trial: train the student the sampled config describes and report every epoch."""
    cfg = trial_config(base, config)
    handle = teachers.get(cfg.method)
    trial = tune.get_context().get_trial_name()
    started = time.perf_counter()

    sources = TrialSources(handle) if handle is not None else None
    hits_exported = 0

    def relay(metrics: dict[str, Any]) -> dict[str, Any]:
        """Adds what a trial row needs (wall time; the teacher counters, which multi-worker trials already
        summed over their workers) and feeds the dashboard."""
        nonlocal hits_exported
        counters = sources.counters() if sources is not None else {"cache_hits": 0, "teacher_samples_computed": 0}
        metrics = {**counters, **metrics, "wall_s": time.perf_counter() - started}
        telemetry.student_throughput(trial, metrics["samples_per_s"])
        if handle is not None:
            telemetry.cache_hits(handle.name, metrics["cache_hits"] - hits_exported)
            hits_exported = metrics["cache_hits"]
        return metrics

    if workers_per_trial == 1:
        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
            tune.report(relay(metrics), checkpoint=checkpoint)

        previous = tune.get_checkpoint()
        resume = previous.as_directory() if previous is not None else contextlib.nullcontext(None)
        with tempfile.TemporaryDirectory(prefix="raykd-trial-") as tmp, resume as resume_dir:
            train(cfg, report=report, teacher=sources, checkpoint_dir=Path(tmp) / "checkpoint",
                  resume_from=resume_dir)
        return

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raykd.train.ray_worker import train_worker

    class Relay(TuneReportCallback):
        """Adds the trial's wall time and feeds the dashboard before handing the report to Tune."""

        def after_report(self, run_context, metrics, checkpoint):
            super().after_report(run_context, [relay(metrics[0])], checkpoint)

    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train": cfg.to_dict(), "teacher": handle},
        scaling_config=ScalingConfig(num_workers=workers_per_trial, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker, "GPU": gpus_per_worker}),
        run_config=RunConfig(name=f"{trial}-train", storage_path=str(Path(tempfile.gettempdir()) / "raykd-train"),
                             failure_config=FailureConfig(max_failures=max_failures), callbacks=[Relay()]),
    )
    trainer.fit()


def concurrent_trials(sweep: SweepConfig) -> int:
    """How many trials the cluster holds at once, from its CPUs and GPUs (at least one)."""
    if sweep.max_concurrent_trials:
        return sweep.max_concurrent_trials
    resources = ray.cluster_resources()
    per_trial = sweep.cpus_per_worker * sweep.workers_per_trial + (DRIVER_CPU if sweep.workers_per_trial > 1 else 0)
    fits = [resources.get("CPU", 1) // max(per_trial, 1e-9)]
    if sweep.gpus_per_worker:
        fits.append(resources.get("GPU", 0) // (sweep.gpus_per_worker * sweep.workers_per_trial))
    return max(1, int(min(fits)))


def teacher_needs(method: str, task: str) -> tuple[str, ...]:
    """Every teacher output ``method`` may ask for in this sweep: the union over its searched categorical knobs
    (DVMSR's ``position`` switches between the SR image and a feature), the other knobs at their defaults."""
    choices = {name: knob.choices for name, knob in SPACES[task][method].items() if knob.kind == "choice"}
    outputs = {o for combo in itertools.product(*choices.values())
               for o in create_method(method, task, **dict(zip(choices, combo))).teacher_outputs()}
    return tuple(sorted(outputs))


def run_sweep(base: TrainConfig, teacher: TeacherSpec | dict[str, TeacherSpec], sweep: SweepConfig) -> dict[str, Any]:
    """Run (or, with ``sweep.resume``, continue) the sweep; returns the summary written beside the results.

    ``teacher`` serves every method that distils, or is a ``{method: teacher}`` mapping where methods distil
    from different teachers (MTKD's aggregated teacher against L1-KD's single one)."""
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    methods = check_methods(sweep.methods, base.task)
    metric = sweep.metric or TASKS[base.task].metric
    started = time.perf_counter()
    build_task(base)  # every image checked once, before any trial starts; trials skip it
    needs = {m: teacher_needs(m, base.task) for m in methods}
    per_method = teacher if isinstance(teacher, dict) else {m: teacher for m in methods if needs[m]}
    missing = [m for m in methods if needs[m] and m not in per_method]
    if missing:
        raise ValueError(f"methods {missing} distil from a teacher but none was given for them")
    services = {}  # one service per teacher, each serving the union of what its methods need
    for spec in {s.name: s for s in per_method.values()}.values():
        services[spec.name] = TeacherService([spec], base, Path(sweep.cache_dir).expanduser(),
                                             replicas=sweep.teacher_replicas, num_gpus=sweep.teacher_gpus)
    try:
        handles = {}
        for name, service in services.items():
            outputs = sorted({o for m, spec in per_method.items() if spec.name == name for o in needs[m]})
            handles[name] = service.handles(outputs, sweep.teacher_mode)[name]
        teachers = {m: handles[spec.name] for m, spec in per_method.items() if needs[m]}
        for name, service in services.items():
            if not handles[name].live:  # outputs are in the object store: the actors' CPUs/GPUs go to trials
                service.shutdown()
        base_dict = {k: v for k, v in base.to_dict().items() if k not in ("method", "method_params")}
        trainable = tune.with_parameters(
            run_trial, base=base_dict, teachers=teachers, workers_per_trial=sweep.workers_per_trial,
            cpus_per_worker=sweep.cpus_per_worker, gpus_per_worker=sweep.gpus_per_worker,
            max_failures=sweep.max_failures)
        # a single-worker trial trains in the trial itself; a multi-worker trial only drives its TorchTrainer, whose
        # workers ask for their own resources (Tune refuses a trial that asks for nothing, hence a token share)
        own = {"cpu": sweep.cpus_per_worker, "gpu": sweep.gpus_per_worker} if sweep.workers_per_trial == 1 \
            else {"cpu": DRIVER_CPU}
        trainable = tune.with_resources(trainable, own)
        directory = sweep.directory
        if sweep.resume and Tuner.can_restore(str(directory)):
            tuner = Tuner.restore(str(directory), trainable=trainable, resume_errored=True)
        else:
            if sweep.resume:
                print(f"--resume: no sweep to resume at {directory}; starting a new one")
            searcher = OptunaSearch(space=DefineByRun(methods, base.task), metric=metric, mode=sweep.mode,
                                    points_to_evaluate=default_points(methods, base.task), seed=sweep.seed)
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max(base.epochs, 1),
                                      grace_period=min(sweep.grace_period, max(base.epochs, 1)))
            tuner = Tuner(
                trainable,
                tune_config=TuneConfig(metric=metric, mode=sweep.mode, search_alg=searcher,
                                       scheduler=scheduler, num_samples=sweep.num_samples,
                                       max_concurrent_trials=concurrent_trials(sweep)),
                run_config=RunConfig(name=sweep.name, storage_path=str(directory.parent),
                                     failure_config=FailureConfig(max_failures=sweep.max_failures),
                                     verbose=sweep.verbose),
            )
        results = tuner.fit()
        best = results.get_best_result(metric=metric, mode=sweep.mode, scope="all")
        if best.metrics is not None:
            telemetry.best_metric(metric, best.metrics.get(f"best_{metric}", best.metrics[metric]))
        stats = {name: dataclasses.asdict(s) for service in services.values() for name, s in service.stats.items()}
        return write_report(results, directory, task=base.task, sweep={**dataclasses.asdict(sweep), "metric": metric},
                            base=base_dict, teacher_stats=stats, wall_s=time.perf_counter() - started)
    finally:
        for service in services.values():
            service.shutdown()
