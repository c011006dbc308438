"""The teacher service: Ray actors hosting frozen teachers, whose outputs are computed once per sweep.

For each teacher the service looks its outputs up in the persistent cache (keyed by the teacher's weights,
the dataset, the view plan and the output names). On a miss the teacher's actors compute every (sample, view)
once, in parallel over replicas, and the result is saved. Either way the table goes into Ray's object store once,
and every trial of the sweep (and every worker of a trial) reads that one copy.

Outputs too large to cache (24 layers of hidden states, say) are served live instead: the trainer sends its
batch to a teacher actor and collects the answer after its own forward. The service picks live mode when the
estimated table would exceed ``live_threshold_bytes``, or when asked to.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import ray
import torch

from raykd import telemetry
from raykd.teachers.cache import TeacherCache, cache_key
from raykd.teachers.sources import Fetch
from raykd.teachers.specs import TeacherSpec, sorted_specs
from raykd.train.config import TrainConfig
from raykd.train.loop import resolve_device
from raykd.train.tasks import Task, build_task

DEFAULT_LIVE_THRESHOLD_BYTES = 4 * 2**30


def teacher_task(data_config: TrainConfig | dict[str, Any]) -> Task:
    """The task's data as teachers see it (HR views; images were checked by the sweep already)."""
    values = data_config.to_dict() if isinstance(data_config, TrainConfig) else data_config
    return build_task(TrainConfig.from_dict({**values, "check_data": False}))


@ray.remote
class TeacherActor:
    """One frozen teacher on its own device (a GPU when the actor was given one), serving two kinds of call:
    ``compute`` for the cache (views of dataset samples it loads itself) and ``forward`` for live mode."""

    def __init__(self, spec: TeacherSpec, weights: bytes | None, data_config: dict[str, Any]):
        self.spec = spec
        self.model = spec.build(resolve_device("auto"), weights)
        self.task = teacher_task(data_config)

    def compute(self, indices: Sequence[int], outputs: Sequence[str], batch_size: int) -> dict[str, Any]:
        """Outputs for every view of each sample in ``indices``: one row per (sample, view)."""
        rows: dict[str, list] = {name: [] for name in ("index", "view", *outputs)}
        for batch in self.task.teacher_batches(indices, batch_size):
            out = self.task.teacher_forward(self.model, batch["input"], outputs)
            rows["index"].append(batch["index"])
            rows["view"].append(batch["view"])
            for name in outputs:
                rows[name].extend(out[name].cpu().numpy())
        index = np.concatenate(rows["index"])
        telemetry.teacher_samples_computed(self.spec.name, len(index))
        return {"index": index, "view": np.concatenate(rows["view"]),
                **{name: rows[name] for name in outputs}}

    def bytes_per_view(self, outputs: Sequence[str]) -> int:
        """Bytes one (sample, view) row of ``outputs`` takes (a probe forward, not counted as computed)."""
        batch = next(self.task.teacher_batches([0], 1))
        out = self.task.teacher_forward(self.model, batch["input"], outputs)
        return sum(value.numel() * 4 for value in out.values())

    def forward(self, x: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        out = self.task.teacher_forward(self.model, torch.from_numpy(x), outputs)
        telemetry.teacher_samples_computed(self.spec.name, len(x))
        return {name: value.cpu().numpy() for name, value in out.items()}


def _stack(rows: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Rows of one output: one array when they share a shape (logits), else the list (whole SR images)."""
    return np.stack(rows) if len({r.shape for r in rows}) == 1 else rows


class ActorTeacher:
    """Live mode: each batch goes to one of a teacher's actors (round robin) while the student computes."""

    def __init__(self, actors: Sequence[Any], outputs: Sequence[str], input_key: str = "hr"):
        self.outputs = tuple(outputs)
        self.input_key = input_key
        self._actors = itertools.cycle(actors)
        self.samples_computed = 0

    def request(self, batch: dict[str, torch.Tensor]) -> Fetch:
        x = batch[self.input_key]
        ref = next(self._actors).forward.remote(x.numpy(), self.outputs)
        self.samples_computed += len(x)
        # arrays from the object store are read-only; the step's tensors are small, so copy them
        return lambda: {name: torch.tensor(value) for name, value in ray.get(ref).items()}


@dataclass
class TeacherHandle:
    """What a trial receives for one teacher: an object-store reference to its cached table, or its actors."""

    name: str
    outputs: tuple[str, ...]
    table: Any = None  # cached mode: ray.ObjectRef of the CacheEntry
    actors: list[Any] = field(default_factory=list)  # live mode

    @property
    def live(self) -> bool:
        return self.table is None

    def source(self, task: Task):
        """The trainer-side teacher source for this handle in ``task``."""
        if self.live:
            return ActorTeacher(self.actors, self.outputs, task.teacher_input_key)
        return task.cached_teacher(ray.get(self.table), self.outputs)


class TrialSources:
    """The ``teacher`` factory a trial hands to ``train``: builds the handle's source for the task and keeps it,
    so the trial can report how many outputs came from the cache and how many a teacher computed."""

    def __init__(self, handle: TeacherHandle):
        self.handle = handle
        self.sources: list[Any] = []

    def __call__(self, task: Task):
        self.sources.append(self.handle.source(task))
        return self.sources[-1]

    def counters(self) -> dict[str, int]:
        return {"cache_hits": sum(getattr(s, "hits", 0) for s in self.sources),
                "teacher_samples_computed": sum(getattr(s, "samples_computed", 0) for s in self.sources)}


@dataclass
class TeacherStats:
    samples_computed: int = 0
    entries_built: int = 0
    entries_loaded: int = 0
    cache_bytes: int = 0


class TeacherService:
    """Driver-side owner of the teacher actors and the cache for one dataset configuration."""

    def __init__(self, specs: Sequence[TeacherSpec], data_config: TrainConfig, cache_dir: str | Path, *,
                 replicas: int = 1, num_cpus: float = 1, num_gpus: float = 0, batch_size: int = 256,
                 live_threshold_bytes: int = DEFAULT_LIVE_THRESHOLD_BYTES):
        self.specs = sorted_specs(list(specs))
        telemetry.start()
        self.task = teacher_task(data_config)
        self.cache = TeacherCache(Path(cache_dir) / "teacher_outputs")
        self.batch_size = batch_size
        self.live_threshold_bytes = live_threshold_bytes
        self.stats = {spec.name: TeacherStats() for spec in self.specs}
        data_dict = {k: v for k, v in data_config.to_dict().items() if k != "check_data"}
        self.actors = {}
        for spec in self.specs:
            weights = ray.put(spec.weights_bytes())  # actors on other nodes cannot read the driver's files
            self.actors[spec.name] = [TeacherActor.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(
                spec, weights, data_dict) for _ in range(replicas)]
        self._fingerprint: str | None = None

    def handles(self, outputs: Sequence[str], mode: str = "auto") -> dict[str, TeacherHandle]:
        """One handle per teacher (name order) serving ``outputs``; ``mode`` is "auto", "cached" or "live"."""
        if mode not in ("auto", "cached", "live"):
            raise ValueError(f"teacher mode {mode!r}: use 'auto', 'cached' or 'live'")
        outputs = tuple(sorted(outputs))
        return {spec.name: self._handle(spec, outputs, mode) for spec in self.specs}

    def _handle(self, spec: TeacherSpec, outputs: tuple[str, ...], mode: str) -> TeacherHandle:
        if mode == "live":
            return TeacherHandle(spec.name, outputs, actors=self.actors[spec.name])
        task = self.task
        key = cache_key(teacher=spec.identity(), dataset_fingerprint=task.fingerprint,
                        view_plan=task.teacher_inputs(), outputs=outputs)
        stats = self.stats[spec.name]
        entry = self.cache.load(key)
        if entry is None:
            rows = task.teacher_rows
            if mode == "auto":
                per_row = ray.get(self.actors[spec.name][0].bytes_per_view.remote(outputs))
                if per_row * rows > self.live_threshold_bytes:
                    return TeacherHandle(spec.name, outputs, actors=self.actors[spec.name])
            table = self._compute(spec, outputs, len(task.train))
            entry = self.cache.save(key, table["index"], table["view"], {n: table[n] for n in outputs},
                                    meta={"teacher": spec.name, "outputs": list(outputs)})
            stats.entries_built += 1
            stats.samples_computed += rows
        else:
            stats.entries_loaded += 1
        stats.cache_bytes = entry.nbytes
        telemetry.cache_bytes(spec.name, entry.nbytes)
        return TeacherHandle(spec.name, outputs, table=ray.put(entry))

    def _compute(self, spec: TeacherSpec, outputs: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
        actors = self.actors[spec.name]
        per_actor = math.ceil(n / len(actors))
        parts = ray.get([actor.compute.remote(list(range(i * per_actor, min(n, (i + 1) * per_actor))), outputs,
                                              self.batch_size)
                         for i, actor in enumerate(actors) if i * per_actor < n])
        return {"index": np.concatenate([p["index"] for p in parts]),
                "view": np.concatenate([p["view"] for p in parts]),
                **{name: _stack([row for p in parts for row in p[name]]) for name in outputs}}

    def __enter__(self) -> "TeacherService":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the teacher actors (cached outputs already handed out stay valid: they live in the object store)."""
        for actor in itertools.chain.from_iterable(self.actors.values()):
            ray.kill(actor)
        self.actors = {name: [] for name in self.actors}
