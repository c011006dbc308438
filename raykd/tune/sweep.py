"""A Ray Tune + Optuna sweep over distillation methods and their hyperparameters.

:func:`run_sweep` decodes the data once (:mod:`raykd.data.arrays`) and puts it in the object store, checks every
teacher against the data and the student before any work starts, starts the sweep's teacher service
(:mod:`raykd.teachers.service`), and runs the trials: Optuna's define-by-run space over the methods' own search
spaces, ASHA early stopping, Tune's retries from checkpoints, trial actors reused between trials (so a process
builds its task once). Each trial trains one student through :func:`raykd.train.worker.train_worker`: directly in
the trial with one worker, or in every worker of a ``TorchTrainer`` with several (Ray Train V2, checkpoints on the
sweep's storage so any node can resume them). A seeds stage then retrains the best configuration of each method
with ``sweep.seeds`` seeds, and :mod:`raykd.tune.report` writes the results.
"""
from __future__ import annotations

import errno
import functools
import importlib.util
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from raykd import telemetry
from raykd.config import SweepConfig, TeacherConfig, TrainConfig, is_uri, override, to_json
from raykd.console import Interrupted, StageFailed, UserError, log, one_line
from raykd.data.arrays import load_split, object_store_bytes
from raykd.data.store import cache_store, store_root
from raykd.methods import create_method
from raykd.models import check_model_name
from raykd.models.checkpoint import recorded_score
from raykd.models.features import capture
from raykd.registry import TASKS
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service, stop_service
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import compact_logits
from raykd.train.loop import build_student
from raykd.train.tasks import Task, build_task
from raykd.train.worker import TrialSpec, epoch_reads, train_worker
from raykd.tune.progress import StageProgress
from raykd.tune.report import write_report
from raykd.tune.resources import check_sweep_resources, share_cpus, share_gpus
from raykd.tune.spaces import DefineByRun, check_methods, default_points, teacher_needs, trial_method
from raykd.tune.tracking import MLflowTracking, log_best_student

__all__ = ["run_sweep", "SweepPayload", "check_sweep", "check_writable", "check_teacher", "check_table_space",
           "check_object_store", "local_object_store", "decoded_splits", "fit_stage"]

DRIVER_CPU = 0.01  # what a multi-worker trial's own process asks for: it only drives its TorchTrainer
LOW_SPACE = 64 * 2**20  # free bytes under which a trial's unreadable error file is taken for a full disk


@dataclass(frozen=True)
class SweepPayload:
    """What every trial of a sweep shares (put in the object store once by ``tune.with_parameters``)."""

    base: TrainConfig
    splits: dict[str, Any]
    clients: dict[str, ServiceClient]
    teachers: dict[str, TeacherConfig]
    scaling: Any
    max_failures: int
    storage: str

    def trial(self, config: Mapping[str, Any]) -> TrialSpec:
        method, params = trial_method(dict(config))
        params = {**params, **fixed_params(self.base, method)}
        cfg = override(self.base, {"method.name": method, "method.params": params,
                                   "seed": int(config.get("seed", self.base.seed)),
                                   "teacher": self.teachers.get(method)})  # served by the service; recorded
        trial = tune.get_context().get_trial_name()
        return TrialSpec(cfg, self.splits, self.clients.get(method), name=trial, started=time.time(),
                         extra={"seed": cfg.seed})


def run_trial(config: dict[str, Any], payload: SweepPayload) -> None:
    """One Tune trial: the student its config describes, trained by the one trial path for 1..N workers."""
    spec = payload.trial(config)
    if payload.scaling.num_workers == 1:
        train_worker({"trial": spec})
        return
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(train_worker, train_loop_config={"trial": spec, "distributed": True}, scaling_config=payload.scaling,
                 run_config=RunConfig(name=f"{spec.name}-train", storage_path=payload.storage,
                                      failure_config=FailureConfig(max_failures=payload.max_failures),
                                      callbacks=[TuneReportCallback()])).fit()


def decoded_splits(base: TrainConfig, cache_dir: str) -> dict[str, Any]:
    """The data's train and val splits, decoded once (or read back from the store) and put in the object store,
    each refused before it is decoded when the room left in this node's object store cannot hold it."""
    store, room, splits = cache_store(cache_dir), local_object_store(), {}
    for split in ("train", "val"):
        arrays = load_split(base.data, split, store, object_store=room)
        room = None if room is None else room - object_store_bytes(arrays)
        splits[split] = ray.put(arrays)
    return splits


def local_object_store() -> int | None:
    """The object store capacity (bytes) of this driver's node: where the data is put and the teacher service, on
    the same node, puts the tables it serves; None where Ray does not say."""
    node = ray.get_runtime_context().get_node_id()
    found = [n["Resources"].get("object_store_memory") for n in ray.nodes() if n["NodeID"] == node and n["Alive"]]
    return int(found[0]) if found and found[0] else None


def check_object_store(projection: Mapping[str, Mapping[str, Any]], data_bytes: int, keep: int,
                       capacity: int | None) -> None:
    """Refuse, before any table is made, a sweep whose data and the teacher tables the service keeps in the object
    store (``keep`` per stored teacher: ``teacher_service.keep_epochs``) exceed the node's object store
    ``capacity``: Ray would spill them to disk and every trial's step would wait on the reads."""
    tables = {name: keep * int(p["table_bytes"]) for name, p in projection.items()}
    if capacity is None or data_bytes + sum(tables.values()) <= capacity:
        return
    each = ", ".join(f"{name}: {keep} x {_size(p['table_bytes'])}" for name, p in projection.items())
    over = data_bytes + sum(tables.values()) - capacity
    # streaming leaves only the labels there: offered where that alone would make room
    stream = ", or stream the data (RAYKD_DATA_MEMORY below its size)" if data_bytes >= over else ""
    raise UserError(f"the object store on the driver's node holds {_size(capacity)}; the data takes "
                    f"{_size(data_bytes)} and the teacher tables it keeps {_size(sum(tables.values()))} ({each}): "
                    "raise the object store (ray start --object-store-memory BYTES), keep fewer tables there "
                    f"(teacher_service.keep_epochs in the sweep's config){',' if stream else ' or'} keep fewer "
                    f"logits (--top-k K){stream}")


def check_teacher(spec: TeacherSpec, base: TrainConfig, task: Task) -> None:
    """Refuse, before any teacher pass, a teacher that does not fit the run: its weights must load into its model,
    and its output must have the student's shape (the number of classes, the SR scale). ``task``: the base's."""
    cls = base.data.task == "cls"
    probe = task.batch(np.arange(min(2, len(task))), 0, torch.device("cpu"), ("hr", "lr") if cls else ("lr",))
    with torch.no_grad():
        teacher = capture(spec.build("cpu"), probe[task.teacher_input], [], task.output)[task.output]
        student = build_student(base, task).eval()(probe[(base.method.student_input or "hr") if cls else "lr"])
    if (cls and teacher.shape[1] != student.shape[1]) or (not cls and teacher.shape[1:] != student.shape[1:]):
        what = f"{teacher.shape[1]} classes, the data has {student.shape[1]}" if cls else \
            f"{tuple(teacher.shape[1:])} images for {tuple(student.shape[1:])} (x{base.data.scale})"
        raise ValueError(f"teacher {spec.name!r} ({spec.checkpoint}) does not fit this sweep: it predicts {what}; "
                         f"give a teacher trained on {base.data.dataset} ({task.model_kwargs()})")


def fixed_params(base: TrainConfig, method: str) -> Mapping[str, Any]:
    """The knobs of ``method`` the sweep holds for all its trials: the base's method params when the base names
    that method (ViMD's ``terms`` of an ablation column); searched values never override them."""
    return base.method.params if method == base.method.name else {}


def _check_resumable(directory: str) -> None:
    """What ``--resume`` needs of a stage's Tune directory before it is used. ``Tuner.restore`` unpickles
    ``tuner.pkl`` from it, so whoever can write there runs code in this driver: refuse a local directory that another
    user owns or that group/others may write. And Tune, given a damaged experiment state, logs "Failed to restore the
    run state" and starts the stage again from nothing: refuse a state that does not parse instead."""
    if is_uri(directory):
        return
    for path in (Path(directory), Path(directory) / "tuner.pkl"):
        if not path.exists():
            continue
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"--resume refuses {path}: it is owned by uid {info.st_uid} (you are {os.getuid()}) "
                                  f"or writable by others (mode {stat.filemode(info.st_mode)}); resuming unpickles "
                                  "Tune's state from it, so only resume a sweep directory only you can write")
    states = sorted(Path(directory).glob("experiment_state-*.json"))  # Tune restores from the newest name
    if not states:
        return
    try:
        state = json.loads(states[-1].read_text())
        if not {"runner_data", "trial_data"} <= set(state):
            raise ValueError("it holds no runner or trial data")
    except (OSError, ValueError) as err:
        raise UserError(f"--resume: {states[-1]} is damaged ({one_line(err)}), so the sweep cannot be continued from "
                        "it; run without --resume and with --force to start afresh (the old results are moved aside, "
                        "not deleted)") from None


def _directory(sweep: SweepConfig, name: str) -> str:
    """``<storage>/<name>``: the Tune experiment directory of the search (``sweep.name``) or the seeds stage."""
    return str(Path(sweep.directory).parent / name) if not is_uri(sweep.directory) else \
        f"{sweep.directory.rsplit('/', 1)[0]}/{name}"


def check_sweep(sweep: SweepConfig, task: str, models: Sequence[str] = ()) -> None:
    """What refuses a sweep at once, without Ray and before any data, teacher or Tune work: an unknown method (or
    one whose defaults do not hold), an unknown model in ``models``, results storage or a cache that cannot be
    written, and ``--resume`` of a directory others can write. (What no node can hold is refused by
    :func:`raykd.tune.resources.check_sweep_resources` once Ray is up.)"""
    for method in check_methods(sweep.methods, task):
        create_method(method, task)
    for name in models:
        check_model_name(name)
    check_writable("--storage", sweep.storage)
    check_writable("--cache-dir", sweep.cache_dir)
    if "mlflow" in sweep.log and importlib.util.find_spec("mlflow") is None:
        raise UserError("--log mlflow needs MLflow: pip install 'raykd[track]' (or mlflow-skinny)")
    if sweep.resume:
        for name in (sweep.name, f"{sweep.name}-seeds"):
            _check_resumable(_directory(sweep, name))


def check_writable(flag: str, directory: str) -> None:
    """Refuse a local ``directory`` this user cannot write in (or, where it does not exist yet, cannot create: its
    nearest existing parent is tried); nothing is left behind. URIs are the storage layer's to judge."""
    if is_uri(directory):
        return
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {directory}: {existing} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".raykd-write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"{flag} {directory} cannot be written ({existing}: {err.strerror or err}); give a "
                              "directory you can write") from None


def _tuner(trainable: Any, sweep: SweepConfig, base: TrainConfig, metric: str, name: str, *, search: bool,
           grid: list[dict[str, Any]] | None = None) -> Any:
    import optuna
    from ray.tune import RunConfig, TuneConfig, Tuner
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    directory = _directory(sweep, name)
    if sweep.verbose == 0:  # Tune's newer output engine prints its header boxes even when silent; the legacy one,
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # silenced, prints nothing (raykd.tune.progress says what happens)
    if sweep.resume and Tuner.can_restore(directory):  # (its storage was checked by check_sweep)
        return Tuner.restore(directory, trainable=trainable, resume_errored=True)
    if search:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" per stage
        searcher = OptunaSearch(space=DefineByRun(sweep.methods, base.data.task), metric=metric, mode=sweep.mode,
                                points_to_evaluate=default_points(sweep.methods, base.data.task), seed=sweep.seed)
        epochs = base.optim.epochs
        tune_config = TuneConfig(metric=metric, mode=sweep.mode, search_alg=searcher, num_samples=sweep.num_samples,
                                 scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs,
                                                         grace_period=min(sweep.grace_period, epochs)),
                                 max_concurrent_trials=sweep.max_concurrent_trials, reuse_actors=True)
        param_space = None
    else:
        tune_config = TuneConfig(metric=metric, mode=sweep.mode, max_concurrent_trials=sweep.max_concurrent_trials,
                                 reuse_actors=True)
        param_space = {"run": tune.grid_search(grid)}
    progress = StageProgress("search" if search else "seeds", sweep.num_samples if search else len(grid or ()),
                             metric, sweep.mode, base.optim.epochs)
    return Tuner(trainable, tune_config=tune_config, param_space=param_space,
                 run_config=RunConfig(name=name, storage_path=directory.rsplit("/", 1)[0],
                                      failure_config=sweep.failure, verbose=sweep.verbose,
                                      callbacks=[*_tracking(sweep, base, progress.stage), progress]))


def _tracking(sweep: SweepConfig, base: TrainConfig, stage: str) -> list[Any]:
    """The stage's MLflow tracking with ``--log mlflow`` (:mod:`raykd.tune.tracking`); none otherwise."""
    if "mlflow" not in sweep.log:
        return []
    return [MLflowTracking(sweep.name, sweep.directory, stage, base.data.task, to_json(base),
                           {m: dict(fixed_params(base, m)) for m in sweep.methods})]


def run_sweep(base: TrainConfig, teachers: TeacherSpec | Mapping[str, TeacherSpec] | None, sweep: SweepConfig,
              splits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run (or, with ``sweep.resume``, continue) the sweep; returns the summary written beside the results.

    ``teachers`` serves every method that distils, or is a ``{method: teacher}`` mapping where methods distil from
    different teachers (MTKD's aggregated teacher against L1-KD's single one). ``splits``: the decoded data already
    in the object store (:func:`decoded_splits`; decoded here when not given)."""
    task_name = base.data.task
    check_sweep(sweep, task_name, [base.model.name])
    check_sweep_resources(sweep)
    metric = sweep.metric or TASKS.get(task_name).metric
    started = time.perf_counter()
    telemetry.start()
    needs = {m: teacher_needs(m, task_name, fixed_params(base, m)) for m in sweep.methods}
    per_method = dict(teachers) if isinstance(teachers, Mapping) else \
        {m: teachers for m in sweep.methods if needs[m] and teachers is not None}
    missing = [m for m in sweep.methods if needs[m] and m not in per_method]
    if missing:
        raise ValueError(f"methods {missing} distil from a teacher but none was given for them")
    per_method = {m: spec for m, spec in per_method.items() if needs.get(m)}
    splits = dict(splits) if splits is not None else decoded_splits(base, sweep.cache_dir)
    specs = {spec.name: spec for spec in per_method.values()}
    actors = len(specs) * sweep.teacher_service.replicas
    sweep = share_cpus(share_gpus(sweep, actors), actors)  # teachers and a trial on one GPU node, all on one node
    outputs = {name: tuple(sorted({o for m, s in per_method.items() if s.name == name for o in needs[m]}))
               for name in specs}
    # the driver's view of the data (zero-copy from the object store): teacher probes and the trials' read plans
    task = build_task(base.data, base.seed, {name: ray.get(ref) for name, ref in splits.items()}) if specs else None
    for spec in specs.values():
        check_teacher(spec, base, task)
    service = None
    try:
        service = _start_teachers(specs, outputs, base, splits, sweep, task)
        clients = {m: ServiceClient(service, spec.name, outputs[spec.name]) for m, spec in per_method.items()}
        teacher_configs = {m: spec.as_config() for m, spec in per_method.items() if spec.checkpoint}
        payload = SweepPayload(base, splits, clients, teacher_configs, sweep.scaling, sweep.failure.max_failures,
                               _storage(sweep))
        trainable = tune.with_resources(tune.with_parameters(run_trial, payload=payload), _trial_resources(sweep))
        results, problem = fit_stage(_tuner(trainable, sweep, base, metric, sweep.name, search=True), "search",
                                sweep.num_samples, _directory(sweep, sweep.name))
        seed_results = None
        if sweep.seeds and problem is None:
            seed_results, problem = _seeds_stage(results, payload, service, base, sweep, metric, task)
        stats = ray.get(service.statistics.remote()) if service is not None else {}
        summary = write_report(results, seed_results, sweep.directory, task=task_name,
                               sweep={**to_json(sweep), "metric": metric}, base=to_json(base), teacher_stats=stats,
                               wall_s=time.perf_counter() - started, teacher_scores=_teacher_scores(specs, metric),
                               incomplete=None if problem is None else one_line(problem))
        if "mlflow" in sweep.log and summary.get("best") is not None:
            log_best_student(sweep.name, sweep.directory, summary["best"])
        if problem is not None:
            raise problem
        return summary
    finally:
        if service is not None:
            stop_service(service)


def _start_teachers(specs: Mapping[str, TeacherSpec], outputs: Mapping[str, tuple[str, ...]], base: TrainConfig,
                    splits: Mapping[str, Any], sweep: SweepConfig, task: Task | None) -> Any:
    """The teacher service for the search stage (None when no method distils), its tables' disk use checked."""
    if not specs:
        return None
    service = start_service([TeacherRequest(spec, outputs[name]) for name, spec in specs.items()], base.data,
                            splits["train"], base.optim.epochs, sweep.teacher_service, store_root(sweep.cache_dir),
                            sweep.name)
    try:
        _serve_seeds(service, [base.seed], sweep, base, task)
    except BaseException:
        stop_service(service)
        raise
    return service


def _serve_seeds(service: Any, seeds: list[int], sweep: SweepConfig, base: TrainConfig, task: Task) -> None:
    """Start the teacher streams of ``seeds``, their tables' disk use and the object store's room for them beside
    the data (``task``'s splits) checked first, and their first epochs planned as the trials of each seed will read
    them (:func:`raykd.train.worker.epoch_reads`: with ``--steps-per-epoch``, only those rows are computed)."""
    projection = ray.get(service.projection.remote(seeds))
    check_table_space(projection, store_root(sweep.cache_dir))
    check_object_store(projection, object_store_bytes(task.train_arrays) + object_store_bytes(task.val_arrays),
                       sweep.teacher_service.keep_epochs, local_object_store())
    if base.data.task != "cls":  # whole-image SR tables: trials read them in any order
        ray.get(service.start.remote(seeds))
        return
    first = range(min(sweep.teacher_service.ahead + 1, base.optim.epochs))
    reads = {}
    for seed in seeds:
        reads_of = epoch_reads(replace(base, seed=seed), task, sweep.workers_per_trial)
        reads[seed] = {epoch: reads_of(epoch) for epoch in first}
    ray.get(service.start.remote(seeds, reads))


def _seeds_stage(results: Any, payload: SweepPayload, service: Any, base: TrainConfig, sweep: SweepConfig,
                 metric: str, task: Task | None) -> tuple[Any, Exception | None]:
    """Each method's best configuration retrained with ``sweep.seeds`` seeds (their teacher streams started)."""
    grid = _seed_grid(results, metric, sweep)
    if not grid:
        return None, None
    if service is not None:
        _serve_seeds(service, sorted({run["seed"] for run in grid}), sweep, base, task)
    trainable = tune.with_resources(tune.with_parameters(_seed_trial, payload=payload), _trial_resources(sweep))
    name = f"{sweep.name}-seeds"
    return fit_stage(_tuner(trainable, sweep, base, metric, name, search=False, grid=grid), "seeds", len(grid),
                _directory(sweep, name))


def fit_stage(tuner: Any, stage: str, expected: int, directory: str) -> tuple[Any, Exception | None]:
    """Run one stage; return its results and what to raise once the report says so: :class:`Interrupted` when it
    stopped before all ``expected`` trials finished (after Ctrl-C Tune returns as if done), :class:`StageFailed`
    when every trial failed."""
    try:
        results = tuner.fit()
    except EOFError:  # Tune reading a trial's empty error.pkl: the trial could not write its error (disk full)
        free = shutil.disk_usage(_nearest_existing(directory)).free
        if free < LOW_SPACE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory) from None
        raise
    finished = sum(1 for result in results if result.error is not None or (result.metrics or {}).get("done"))
    if finished < expected:
        return results, Interrupted(f"the {stage} stage stopped with {finished} of {expected} trials finished")
    if results.num_errors == finished:  # (a trial that returned or that ASHA stopped has a last result marked done)
        return results, StageFailed(f"every trial of the {stage} stage failed ({finished}); the first: "
                                    f"{one_line(results.errors[0])}; each trial's error.txt is under {directory}")
    return results, None


def _teacher_scores(specs: Mapping[str, TeacherSpec], metric: str) -> dict[str, float | None]:
    """Each teacher's own ``metric``, as its raykd checkpoint recorded it; None for released weights."""
    return {name: recorded_score(spec.checkpoint, metric) for name, spec in sorted(specs.items())}


def _seed_trial(config: dict[str, Any], payload: SweepPayload) -> None:
    run_trial(config["run"], payload)


def _seed_grid(results: Any, metric: str, sweep: SweepConfig) -> list[dict[str, Any]]:
    """The best configuration of each method (by its best epoch), once per seed ``seed + 1 .. seed + seeds``."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for result in results:
        config, history = result.config or {}, result.metrics_dataframe
        if result.error is not None or history is None or metric not in history or "method" not in config:
            continue
        value = float(history[metric].max() if sweep.mode == "max" else history[metric].min())
        method = config["method"]
        if method not in best or (value > best[method][0]) == (sweep.mode == "max"):
            best[method] = (value, {"method": method, method: dict(config.get(method, {}))})
    return [{**config, "seed": sweep.seed + s} for _, config in best.values() for s in range(1, sweep.seeds + 1)]


def _trial_resources(sweep: SweepConfig) -> dict[str, float]:
    """A single-worker trial trains in the trial itself; a multi-worker trial only drives its TorchTrainer, whose
    workers ask for their own resources (Tune refuses a trial that asks for nothing, hence a token share)."""
    if sweep.workers_per_trial > 1:
        return {"cpu": DRIVER_CPU}
    per_worker = dict(sweep.scaling.resources_per_worker or {})
    gpu = per_worker.pop("GPU", 1.0 if sweep.scaling.use_gpu else 0.0)
    return {"cpu": per_worker.pop("CPU", 1.0), "gpu": gpu, **per_worker}


def _storage(sweep: SweepConfig) -> str:
    """Where multi-worker trials keep their Ray Train runs: beside the sweep's results (shared storage on a
    cluster), never a node's own /tmp."""
    return f"{sweep.directory}-train" if is_uri(sweep.directory) else str(Path(sweep.directory).parent /
                                                                           f"{sweep.name}-train")


TOP_K_SHARE = 0.5  # projected tables above this share of the store disk's free space get --top-k sizes logged
TOP_K_SIZES = (1, 2, 5, 10, 20, 50, 100)  # the k values those sizes are given for (those below the class count)


def check_table_space(projection: Mapping[str, Mapping[str, Any]], root: str) -> None:
    """Say what the teacher tables about to be made will take, and refuse before making any when the store's disk
    has not that much free (a sweep that fills the disk fails every trial at once). ``projection``:
    :meth:`TeacherService.projection`. When the tables would take more than ``TOP_K_SHARE`` (half) of the free
    space and some teacher stores classification logits (``classes`` > 0), warn first with what they would take
    at ``--top-k`` k for the k of ``TOP_K_SIZES`` below the class count; a refusal names the largest k that fits."""
    total = _tables_bytes(projection, None)
    if not total:
        return
    each = ", ".join(f"{name}: {p['tables']} x {_size(p['table_bytes'])}" for name, p in projection.items())
    log.info(f"teacher tables to write: {_size(total)} in {root} ({each})")
    if is_uri(root):
        return
    free = shutil.disk_usage(_nearest_existing(root)).free
    classes = max((p.get("classes", 0) for p in projection.values() if p["tables"]), default=0)
    sizes = [k for k in TOP_K_SIZES if k < classes and _tables_bytes(projection, k) < total]
    if total > TOP_K_SHARE * free and sizes:
        log.warning(f"teacher tables would take {_size(total)} of the {_size(free)} free in {root}; keeping only "
                    "each row's k largest logits they take " +
                    ", ".join(f"--top-k {k}: {_size(_tables_bytes(projection, k))}" for k in sizes) +
                    " (bench/topk_error.py measures what each k changes in the softened teacher outputs)")
    if total > free:
        fits = _largest_fitting_k(projection, classes, free)
        logits = f"keep fewer logits (--top-k {fits} fits)" if fits else "keep fewer logits (--top-k K)"
        raise UserError(f"the teacher tables this sweep writes need {_size(total)} in {root} ({each}) "
                        f"and {_size(free)} is free there: free space, give another --cache-dir, {logits}, "
                        "or fewer views (the data's reuse_views)")


def _tables_bytes(projection: Mapping[str, Mapping[str, Any]], k: int | None) -> int:
    """Bytes of every projected table with logits kept to the top ``k`` (``None``: as projected); teachers with no
    logits to cut (``classes`` 0 or absent) and ``k`` at or above a teacher's class count count as projected."""
    total = 0
    for p in projection.values():
        table = p["table_bytes"]
        if k is not None and k < p.get("classes", 0):
            table -= p["rows"] * (p["logits_bytes"] - _top_k_row_bytes(p["classes"], k, p["precision"]))
        total += p["tables"] * table
    return total


@functools.lru_cache(maxsize=256)
def _top_k_row_bytes(classes: int, k: int, precision: str) -> int:
    """Bytes one row of ``classes`` logits takes kept to the top ``k``: the columns :func:`compact_logits` makes
    (values at ``precision``, class indices, the log-sum-exp), measured on one row."""
    return sum(a.nbytes for a in compact_logits(np.zeros((1, classes), np.float32), k, precision).values())


def _largest_fitting_k(projection: Mapping[str, Mapping[str, Any]], classes: int, free: int) -> int | None:
    """The largest ``--top-k`` below ``classes`` whose tables fit in ``free`` bytes (bytes grow with k: bisected),
    ``None`` when not even k = 1 fits."""
    if classes < 2 or _tables_bytes(projection, 1) > free:
        return None
    low, high = 1, classes - 1  # low fits; the answer is in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if _tables_bytes(projection, mid) <= free else (low, mid - 1)
    return low


def _nearest_existing(directory: str) -> Path:
    """``directory``, or its nearest parent that exists: where its disk and its permissions can be asked about."""
    path = Path(directory).expanduser().absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
