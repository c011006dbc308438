"""Declarative sweeps: a sweep is a small :class:`SweepSpec` (its task, data, teacher and student, methods, and
the full and smoke sizes), and :func:`run_spec` is the one program behind every ``python sweeps/<name>.py`` and
``raykd sweep <name>``: flags, data, Ray, the teacher (trained once), the sweep, the seeds stage, the summary."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raykd.config import (CacheLayout, DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig,
                          TrainConfig, default_cache_dir, is_uri, override, to_json)
from raykd.console import (Interrupted, RayUnavailable, StageFailed, UserError, add_common_flags, key_values, log,
                           one_line)
from raykd.registry import trust_plugins
from raykd.tune.lock import check_fresh_directory, sweep_lock

if TYPE_CHECKING:
    from raykd.teachers.spec import TeacherSpec

__all__ = ["Profile", "RECIPES", "SweepSpec", "run_spec", "connect", "sweep_parser", "sweep_profile", "sweep_config"]


RECIPES = ("budget", "paper")
"""``--recipe``: ``budget`` (the sweep's scaled recipe, sized for a few GPU-hours; the default) or ``paper``
(every value as its paper published it). A spec that has a paper recipe sets a ``paper`` :class:`Profile`; it may
offer more recipes (``recipes``, ViMD's ``released``) and say what a run lacks of its paper (``recipe_notes(args)``,
a list of lines for ``summary.md``)."""


@dataclass(frozen=True)
class Profile:
    """A sweep's sizes for one kind of run: trials, epochs per trial and for the teacher, batch size; the recipe
    they belong to (one of :data:`RECIPES`)."""

    num_samples: int
    epochs: int
    teacher_epochs: int
    batch_size: int
    recipe: str = "budget"


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` ("auto" for the one this machine belongs to; ``$RAY_ADDRESS`` when not
    given) or start a local Ray. A bare ``ray.init()`` would instead join whatever cluster ``/tmp/ray``'s address
    file names, another user's on a shared machine.

    A local Ray starts with timeouts for a loaded machine (:data:`raykd.tune.resources.LOCAL_START_CONFIG`); a
    start that fails has what it left running stopped (its processes hold the ports a retry needs) and is tried
    once more; a second failure, or a cluster that does not answer, is one :class:`RayUnavailable` that says what
    failed and what to try."""
    import time

    import ray

    from raykd.tune.resources import LOCAL_START_CONFIG, choose_token_auth, descendants, stop_processes

    if ray.is_initialized():
        return
    # Ray's and Tune's INFO lines ("Checkpoint successfully created at ...", one per trial epoch) stay in Ray's
    # session logs; raykd prints its own progress (raykd.tune.progress), and --verbose brings them back
    quiet = ray.LoggingConfig(log_level="INFO" if log.isEnabledFor(logging.DEBUG) else "WARNING")
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    local = target == "local"
    options = {"address": target, "logging_config": quiet, **({"_system_config": LOCAL_START_CONFIG} if local else {})}
    where = "a local Ray" if local else f"Ray at {target}"
    if local:
        choose_token_auth()  # token authentication, as Ray would choose, without its WARNING on the terminal
    started, errors = time.perf_counter(), []
    while True:
        before = descendants()
        try:
            context = ray.init(**options)
            break
        except Exception as err:  # noqa: BLE001 -- Ray's start-up failures include bare Exceptions (a raylet timeout)
            ray.shutdown()
            if local:
                stop_processes(descendants() - before)  # a failed start's GCS, raylet and agents
            errors.append(one_line(err))
        if not local or len(errors) == 2:
            tried = "" if len(errors) == 1 else f" (twice; the first time: {errors[0]})"
            hint = ("check the address and that the cluster is up (`ray status --address ...`)" if not local else
                    "on a busy machine the raylet waits only 15 s for its dashboard agent (fixed in Ray 2.60): "
                    "rerun when the load is lower, or start Ray yourself (`ray start --head`, again until it "
                    "starts) and pass --address auto")
            raise RayUnavailable(f"{where} did not start or answer: {errors[-1]} (Ray's logs: /tmp/ray/"
                                 f"session_latest/logs){tried}; {hint}") from None
        log.info(f"a local Ray did not start ({errors[0]}); stopped what it left running, trying once more")
    log.info(f"Ray: {'started a local Ray' if local else f'joined {target}'} in {time.perf_counter() - started:.1f} s")
    if getattr(context, "dashboard_url", None):
        print(f"Ray dashboard: http://{context.dashboard_url}")


class SweepSpec:
    """One paper setting. Subclasses set the class attributes and override what differs:

    * :meth:`data`: the run's data (the built-in demo with ``--smoke``), or ``None`` after telling the user where
      it looked and how to get the data;
    * :meth:`student`, :meth:`teacher_model`, :meth:`optim`: the models and the optimiser (teacher and student
      share the data and optimiser unless :meth:`teacher_config` says otherwise);
    * :meth:`teachers`: the teacher of each distilling method (default: one trained teacher for all of them);
    * :meth:`add_arguments`, :meth:`check`, :meth:`sweep_overrides`, :meth:`run`, :meth:`after` for
      sweep-specific flags, their checks (before Ray starts) and steps.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "cls"
    methods: ClassVar[tuple[str, ...]]
    full: ClassVar[Profile]
    smoke: ClassVar[Profile]

    smoke_ignores: ClassVar[tuple[str, ...]] = ("data_root", "download")
    """Flags (argparse dests) that ``--smoke`` cannot honour (it runs on built-in data): refused with it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def check(self, args: argparse.Namespace) -> None:
        """Refuse a mistake in this sweep's own flags (names, JSON, files) before Ray starts; raise
        :class:`raykd.console.UserError` (or ``ValueError``) naming the flag."""

    def data(self, args: argparse.Namespace) -> DataConfig | None:
        raise NotImplementedError

    def student(self, args: argparse.Namespace) -> ModelConfig:
        raise NotImplementedError

    def teacher_model(self, args: argparse.Namespace) -> ModelConfig:
        raise NotImplementedError

    def optim(self, args: argparse.Namespace, profile: Profile) -> OptimConfig:
        raise NotImplementedError

    def base(self, args: argparse.Namespace, data: DataConfig, profile: Profile) -> TrainConfig:
        """The students' config (each trial fills in its method)."""
        return TrainConfig(model=self.student(args), data=data, optim=self.optim(args, profile), seed=args.seed)

    def teacher_config(self, args: argparse.Namespace, base: TrainConfig, profile: Profile) -> TrainConfig:
        """How the teacher is trained when none is given: the students' data and optimiser, its own model and
        epochs, no method."""
        return replace(base, model=self.teacher_model(args), method=replace(base.method, student_input=None),
                       optim=replace(base.optim, epochs=profile.teacher_epochs))

    def teachers(self, args: argparse.Namespace, base: TrainConfig, profile: Profile, splits: Mapping[str, Any]
                 ) -> TeacherSpec | Mapping[str, TeacherSpec]:
        from raykd.tune.teachers import prepare_teacher

        return prepare_teacher(args.teacher, self.teacher_config(args, base, profile), splits,
                               cache_dir=args.cache_dir, gpus=min(args.gpus_per_worker, 1))

    def sweep_overrides(self, args: argparse.Namespace, profile: Profile) -> dict[str, Any]:
        return {}

    def run(self, args: argparse.Namespace, base: TrainConfig, teachers: TeacherSpec | Mapping[str, TeacherSpec],
            sweep: SweepConfig, splits: Mapping[str, Any]) -> dict[str, Any]:
        """The sweep itself: one :func:`run_sweep` (a spec that runs several, one table each, overrides this and
        leaves its combined summary in ``<sweep.directory>/summary.md``)."""
        from raykd.tune.sweep import run_sweep

        return run_sweep(base, teachers, sweep, splits=splits)

    def after(self, args: argparse.Namespace, sweep: SweepConfig, base: TrainConfig) -> None:
        pass


def sweep_parser(spec: SweepSpec, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"sweeps/{spec.name}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def sizes(key: str) -> str:
        return f"default {getattr(spec.full, key)}; smoke {getattr(spec.smoke, key)}"

    p.add_argument("--smoke", action="store_true",
                   help="the whole pipeline on built-in data with small models (minutes on a laptop CPU)")
    recipes = tuple(getattr(spec, "recipes", RECIPES))  # a spec may offer more (ViMD: its released scripts')
    p.add_argument("--recipe", choices=recipes, default="budget",
                   help=f"{' | '.join(recipes)}: budget is this sweep's scaled recipe (default); paper every value "
                        "as the paper published it, each with its source in the sweep's documentation (the flags "
                        "below still win)")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint directory (skips teacher training)")
    p.add_argument("--num-samples", type=int, default=None, help=f"trials ({sizes('num_samples')})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per trial ({sizes('epochs')})")
    p.add_argument("--teacher-epochs", type=int, default=None, help=f"teacher epochs ({sizes('teacher_epochs')})")
    p.add_argument("--batch-size", type=int, default=None, help=sizes("batch_size"))
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap on training steps per epoch, teacher's included (quick checks on large data)")
    p.add_argument("--methods", nargs="+", default=list(spec.methods),
                   help=f"methods to sweep (default {' '.join(spec.methods)})")
    p.add_argument("--seeds", type=int, default=3,
                   help="retrain the best configuration of each method with this many seeds (default 3; 0: off)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="cap on trials at once (default: as many as the cluster, or its autoscaler, can hold)")
    p.add_argument("--teacher-replicas", type=int, default=1, help="teacher actors per teacher")
    p.add_argument("--top-k", type=int, default=None, help="store only the k largest teacher logits (default: all)")
    p.add_argument("--storage", default="runs",
                   help="where results and checkpoints go: <storage>/<name>/ (a path, NFS, s3:// or gs://; on a "
                        "cluster, storage every node reaches)")
    p.add_argument("--name", default=None, help=f"sweep name (default {spec.name}; smoke {spec.name}_smoke)")
    p.add_argument("--cache-dir", default=default_cache_dir(),
                   help="teacher outputs, decoded data, trained teachers and datasets (default $RAYKD_CACHE or "
                        "~/.cache/raykd; on a cluster, an NFS path mounted on every node)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--force", action="store_true",
                   help="start afresh where a sweep of this name left results (they are moved aside, not deleted)")
    p.add_argument("--log", nargs="*", default=[], choices=("mlflow",),
                   help="also track every trial in MLflow ($MLFLOW_TRACKING_URI, else <results>/mlflow.db; "
                        "TensorBoard needs no flag: tensorboard --logdir <storage>/<name>)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any field of the trials' config, e.g. optim.lr=0.02 or model.kwargs='{\"width\": 2}' "
                        "(sweep.KEY: a field of the sweep's own config, e.g. sweep.grace_period=2); repeatable")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help=f"rerun the sweep a {RECORD} records (its flags, then any given here)")
    add_common_flags(p)
    spec.add_arguments(p)
    return p


def sweep_profile(spec: SweepSpec, args: argparse.Namespace) -> Profile:
    """The sizes of the run: ``--smoke``'s, the paper's (``--recipe paper``) or the budget recipe's, with any size
    flag given winning."""
    if args.recipe == "paper":
        if args.smoke:
            raise UserError("--recipe paper --smoke: the paper's recipe is its full-size training on real data, "
                            "and --smoke runs tiny models on built-in data; drop one of them")
        paper = getattr(spec, "paper", None)
        if not isinstance(paper, Profile):
            raise UserError(f"--recipe paper: sweep {spec.name!r} has no paper recipe (its spec sets no `paper` "
                            "Profile); use --recipe budget")
        profile = paper
    else:
        profile = spec.smoke if args.smoke else spec.full
    given = {k: getattr(args, k) for k in ("num_samples", "epochs", "teacher_epochs", "batch_size")
             if getattr(args, k) is not None}
    return replace(profile, **given)


def sweep_config(spec: SweepSpec, args: argparse.Namespace, profile: Profile) -> SweepConfig:
    """The :class:`SweepConfig` the shared flags describe."""
    from ray.train import ScalingConfig

    resources = {"CPU": args.cpus_per_worker, **({"GPU": args.gpus_per_worker} if args.gpus_per_worker else {})}
    default_name = spec.name + ("_smoke" if args.smoke else "_paper" if args.recipe == "paper" else "")
    values: dict[str, Any] = dict(
        name=args.name or default_name, methods=tuple(args.methods),
        num_samples=profile.num_samples,
        scaling=ScalingConfig(num_workers=args.workers_per_trial, use_gpu=args.gpus_per_worker > 0,
                              resources_per_worker=resources),
        teacher_service=TeacherServiceConfig(replicas=args.teacher_replicas, num_gpus=min(args.gpus_per_worker, 1),
                                      top_k=args.top_k),
        max_concurrent_trials=args.max_concurrent_trials, storage=args.storage, cache_dir=args.cache_dir,
        resume=args.resume, seed=args.seed, seeds=args.seeds, log=tuple(args.log))
    values.update(spec.sweep_overrides(args, profile))
    return SweepConfig(**values)


def run_spec(spec: SweepSpec, argv: Sequence[str] | None = None, doc: str | None = None) -> int:
    """Parse the flags, check every name, value and path, find the data, connect to Ray, prepare the teacher(s),
    run the sweep and print its summary; 2 when the data is missing (after saying where it looked and how to get
    it). Run it behind :func:`raykd.console.run_command` (as :func:`raykd.sweeps.run` does)."""
    parser = sweep_parser(spec, doc)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.config is not None:
        argv = recorded_flags(spec, args.config) + _without(argv, {"--config": 1})
        args = parser.parse_args(argv)
    check_flags(spec, parser, args)
    profile = sweep_profile(spec, args)
    changes = key_values("--set", args.set)
    train_changes = {k: v for k, v in changes.items() if not k.startswith("sweep.")}
    override(TrainConfig(), train_changes)  # an unknown field is refused now, not after the data is found
    sweep = override(sweep_config(spec, args, profile),
                     {k[len("sweep."):]: v for k, v in changes.items() if k.startswith("sweep.")})
    spec.check(args)
    from raykd.tune.resources import check_sweep_resources
    from raykd.tune.sweep import check_sweep, decoded_splits  # not before --help: Ray, Tune and torch take seconds

    check_sweep(sweep, spec.task, [spec.student(args).name])  # no Ray yet, no data: an unknown name costs seconds
    data = spec.data(args)
    if data is None:
        return 2
    base = spec.base(args, data, profile)
    if args.steps_per_epoch is not None:
        base = override(base, {"optim.steps_per_epoch": args.steps_per_epoch})
    base = override(base, train_changes)
    trust_plugins([base.model.name])  # the sweep's own models: its student (and teacher) checkpoints name them
    with sweep_lock(sweep.directory):
        check_fresh_directory([sweep.directory + stage for stage in ("", "-seeds", "-train")], args.resume,
                              args.force)
        connect(args.address)
        check_sweep_resources(sweep)  # before the data is decoded and the teacher trained: both can take hours
        splits = decoded_splits(base, args.cache_dir)
        teachers = spec.teachers(args, base, profile, splits)
        try:
            summary = spec.run(args, base, teachers, sweep, splits)
        except (Interrupted, StageFailed):
            write_record(spec, argv, base, sweep)  # Tune ran: its results are this record's
            raise
        write_record(spec, argv, base, sweep)  # (not before: a sweep refused before Tune leaves no results)
        spec.after(args, sweep, base)
    print_summary(sweep, summary)
    return 0


RECORD = "sweep.json"


def write_record(spec: SweepSpec, argv: Sequence[str], base: TrainConfig, sweep: SweepConfig) -> None:
    """``<results>/sweep.json``: the sweep's name, recipe and flags (what ``--config`` reruns) and the resolved
    configs they gave (the trials' base and the sweep's own), for people and for ``raykd compare``; the recipe is
    also named at the end of ``summary.md`` (with the spec's ``recipe_notes``, what its run departs from the
    paper in, where it has any)."""
    if is_uri(sweep.directory):
        return
    args = sweep_parser(spec, None).parse_args(list(argv))
    record = {"sweep": spec.name, "recipe": args.recipe,
              "flags": _without(argv, {"--resume": 0, "--force": 0, "--config": 1}),
              "train": to_json(base), "sweep_config": to_json(sweep)}
    path = Path(sweep.directory) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = path.with_name("summary.md")
    if summary.exists():
        recipe = {"paper": "paper: the paper's published setting (each value and its source: the sweep's "
                           "documentation)",
                  "budget": "budget: a scaled recipe, not the paper's (--recipe paper runs the paper's)"}.get(
            args.recipe, f"{args.recipe} (the sweep's documentation lists its values)")
        notes = getattr(spec, "recipe_notes", lambda _: [])(args)
        summary.write_text(summary.read_text() + f"\nRecipe: {recipe}.\n"
                           + "".join(f"- not the paper's: {n}\n" for n in notes))
    temporary = path.with_name(f".{RECORD}.tmp")
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    temporary.replace(path)


def recorded_flags(spec: SweepSpec, path: Path) -> list[str]:
    """The flags a :data:`RECORD` of sweep ``spec`` holds."""
    try:
        record = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--config {path}: cannot read it ({one_line(err)}); give the {RECORD} in a sweep's results"
                        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("flags"), list):
        raise UserError(f"--config {path}: not a {RECORD} (no list of flags); give the one in a sweep's results")
    if record.get("sweep") != spec.name:
        raise UserError(f"--config {path} records the sweep {record.get('sweep')!r}, not {spec.name!r}: run "
                        f"`raykd sweep {record.get('sweep')} --config {path}`")
    flags = [str(flag) for flag in record["flags"]]
    recipe = record.get("recipe")
    if isinstance(recipe, str) and not any(f == "--recipe" or f.startswith("--recipe=") for f in flags):
        flags = ["--recipe", recipe, *flags]  # the recipe it ran, even where that was the default of its time
    return flags


def _without(argv: Sequence[str], flags: Mapping[str, int]) -> list[str]:
    """``argv`` without the ``flags`` (each with its number of values)."""
    out, skip = [], 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        name = token.split("=", 1)[0]
        if name in flags:
            skip = 0 if "=" in token else flags[name]
            continue
        out.append(token)
    return out


def check_flags(spec: SweepSpec, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags refused at once: a URI cache dir (:class:`CacheLayout`), and real-data flags given with ``--smoke``
    (which runs on built-in data, so they would be silently ignored)."""
    args.cache_dir = str(CacheLayout.of(args.cache_dir).root)
    if args.smoke:
        ignored = [f"--{dest.replace('_', '-')}" for dest in spec.smoke_ignores
                   if hasattr(args, dest) and getattr(args, dest) != parser.get_default(dest)]
        if ignored:
            raise UserError(f"{', '.join(ignored)}: --smoke runs on built-in data at its own size, so "
                         f"{'this flag has' if len(ignored) == 1 else 'these flags have'} no effect; drop "
                         f"{'it' if len(ignored) == 1 else 'them'}, or drop --smoke")


def print_summary(sweep: SweepConfig, summary: dict[str, Any]) -> None:
    """The best-per-method table (with the seeds' mean +- std) and where the results are."""
    table = Path(sweep.directory) / "summary.md"
    print(table.read_text() if table.exists() else summary, flush=True)
    print(f"results: {sweep.directory}")
