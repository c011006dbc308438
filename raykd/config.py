"""raykd's configuration: small frozen dataclasses that check themselves (Ray's ``ScalingConfig`` style).

A training run (a teacher's, or a student's distillation) is one :class:`TrainConfig`, nested as

    TrainConfig(model=ModelConfig, data=DataConfig, optim=OptimConfig, method=MethodConfig,
                teacher=TeacherConfig | None, runtime=RuntimeConfig, seed)

and a sweep is one :class:`SweepConfig` (Ray's own ``ScalingConfig`` and ``FailureConfig``, a
:class:`TeacherServiceConfig`, the search and the storage). A config travels as itself (it pickles) between the
driver, the teacher service and the trials; it becomes JSON only at the edges (checkpoint metadata, results),
through :func:`to_json` / :func:`from_json`, which round-trip exactly. Variations are ``dataclasses.replace`` or
:func:`override` with dotted paths (``override(cfg, {"optim.lr": 0.1})``).

Every field is checked when the object is built; an error names the field, the value and what would be right.
Checks that need the registries (does the model or method exist, are the method's parameters valid) happen when
the run is built, still before any work starts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

__all__ = [
    "ModelConfig", "DataConfig", "OptimConfig", "MethodConfig", "TeacherConfig", "RuntimeConfig", "TrainConfig",
    "TeacherServiceConfig", "SweepConfig", "to_json", "from_json", "override", "default_cache_dir", "is_uri",
    "CacheLayout",
]

TASK_NAMES = ("cls", "sr")


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` names a filesystem by URI (``s3://``, ``gs://``, ``file://``...) rather than a plain
    path: what plain file I/O cannot reach, and pyarrow's filesystems can."""
    return "://" in str(location)


def default_cache_dir() -> str:
    """raykd's cache directory (teacher outputs, decoded data, trained teachers, built-in datasets):
    ``$RAYKD_CACHE`` if set, else ``~/.cache/raykd``."""
    return os.environ.get("RAYKD_CACHE") or str(Path.home() / ".cache" / "raykd")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what would be right."""


def _fail(owner: str, name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{owner}.{name} = {value!r}: expected {expected}")


def _int(owner: str, name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, name, value, "an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        _fail(owner, name, value, f"an integer {bounds}")


def _float(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(owner, name, value, "a finite number")
    if value < low or value > high or (low_open and value == low):
        _fail(owner, name, value, f"a number {'>' if low_open else '>='} {low}" + ("" if high == math.inf
                                                                                  else f" and <= {high}"))


def _choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        _fail(owner, name, value, f"one of {list(choices)}")


def _name(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        _fail(owner, name, value, "a non-empty name")


def _optional_str(owner: str, name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        _fail(owner, name, value, "a non-empty string or None")


def _mapping(owner: str, name: str, value: Any) -> dict[str, Any]:
    """A plain dict with JSON's containers (tuples become lists), so a config equals its JSON round trip."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        _fail(owner, name, value, "a mapping with string keys")
    return json.loads(json.dumps(dict(value)))


def _flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(owner, name, value, "True or False")


def _range(owner: str, name: str, value: Any, high_bound: float, example: str) -> tuple[float, float]:
    """``value`` as a tuple ``(low, high)`` with ``0 < low <= high <= high_bound``, else a ConfigError."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in pair)
    if len(pair) != 2 or not numbers or not 0 < pair[0] <= pair[1] <= high_bound:
        bound = "" if high_bound == math.inf else f" <= {high_bound:g}"
        _fail(owner, name, value, f"two numbers 0 < low <= high{bound}, e.g. {example}")
    return pair


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class ModelConfig:
    """A network: a registered name (``raykd.models``), any timm name, or a plugin ``"pkg.mod:fn"``.

    ``init_from`` starts it from a weights file or raykd checkpoint directory; ``init_keymap`` names the official
    layout of that file (``raykd.models.weights``) when it is not raykd's own.
    """

    name: str = "resnet8x4"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    init_keymap: str | None = None

    def __post_init__(self) -> None:
        _name("model", "name", self.name)
        _set(self, "kwargs", _mapping("model", "kwargs", self.kwargs))
        _optional_str("model", "init_from", self.init_from)
        _optional_str("model", "init_keymap", self.init_keymap)
        if self.init_keymap is not None and self.init_from is None:
            _fail("model", "init_keymap", self.init_keymap, "None unless init_from names a weights file")


@dataclass(frozen=True)
class DataConfig:
    """The data of a run and how its training views are drawn.

    ``task`` is ``"cls"`` (classification) or ``"sr"`` (super-resolution); ``dataset`` a registered dataset of
    that task (``raykd.data``) or a plugin. Training views are fresh every epoch: epoch ``e`` uses view ``e`` of
    each sample, drawn from (seed, sample, e); ``reuse_views=K`` replays views ``e mod K`` instead, a cost saver
    for teachers too slow to run every epoch (never the default: it trains on K crops of each image).

    Classification: images resized to ``image_size``; a view (``crop="pad"``, the CIFAR / TinyImageNet KD recipe)
    is a crop of that size from the image zero-padded by ``crop_padding``, or (``crop="resized"``, torchvision's
    ``RandomResizedCrop``, the ImageNet / fine-grained recipe) a box of area fraction in ``crop_scale`` and aspect
    ratio in ``crop_ratio`` of the decoded image, resized back to ``image_size`` (defaults: torchvision's); either is
    mirrored with probability 1/2 when ``flip``. A low-resolution student input (DFD, ViMD) is
    the view downscaled by ``lr_factor`` (``lr_mode="down"``) or down and back up (``"down_up"``, DFD's).

    Super-resolution: ``patches_per_image`` LR patches of ``patch_size`` per image and epoch at ``scale``, with
    flips and, when ``rot90``, quarter turns. Whole images (evaluation, teacher outputs) are super-resolved in one
    piece unless ``tile`` > 0 asks for LR tiles of that side (``tile_overlap`` apart): tiling bounds memory but is
    not exact for networks that see the whole image (a Mamba scan, RCAN's channel attention). ``y_channel`` is how
    PSNR/SSIM's luma is computed: ``"matlab"`` rounds it to integers as MATLAB's ``rgb2ycbcr`` does (the EDSR /
    RCAN / SwinIR tables), ``"float"`` keeps it unrounded (BasicSR's ``calculate_psnr``).
    """

    task: str = "cls"
    dataset: str = "demo"
    root: str | None = None
    val_dataset: str | None = None
    val_root: str | None = None
    image_size: int = 32
    crop_padding: int = 4
    crop: str = "pad"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    lr_factor: int = 4
    lr_mode: str = "down_up"
    scale: int = 4
    patch_size: int = 48
    patches_per_image: int = 1
    rot90: bool = True
    tile: int = 0
    tile_overlap: int = 16
    y_channel: str = "matlab"
    flip: bool = True
    reuse_views: int | None = None

    def __post_init__(self) -> None:
        _choice("data", "task", self.task, TASK_NAMES)
        _name("data", "dataset", self.dataset)
        for key in ("root", "val_dataset", "val_root"):
            _optional_str("data", key, getattr(self, key))
        _int("data", "image_size", self.image_size, 1)
        _int("data", "crop_padding", self.crop_padding, 0)
        _choice("data", "crop", self.crop, ("pad", "resized"))
        _set(self, "crop_scale", _range("data", "crop_scale", self.crop_scale, 1.0, "(0.08, 1.0)"))
        _set(self, "crop_ratio", _range("data", "crop_ratio", self.crop_ratio, math.inf, "(0.75, 1.333)"))
        _int("data", "lr_factor", self.lr_factor, 1)
        _choice("data", "lr_mode", self.lr_mode, ("down", "down_up"))
        _int("data", "scale", self.scale, 1)
        _int("data", "patch_size", self.patch_size, 1)
        _int("data", "patches_per_image", self.patches_per_image, 1)
        _int("data", "tile", self.tile, 0)
        _int("data", "tile_overlap", self.tile_overlap, 0)
        if self.tile and self.tile_overlap >= self.tile:
            _fail("data", "tile_overlap", self.tile_overlap, f"smaller than data.tile = {self.tile}")
        _choice("data", "y_channel", self.y_channel, ("matlab", "float"))
        for key in ("flip", "rot90"):
            _flag("data", key, getattr(self, key))
        if self.reuse_views is not None:
            _int("data", "reuse_views", self.reuse_views, 1)

    def view_for_epoch(self, epoch: int) -> int:
        """The view number epoch ``epoch`` (0-based) trains on."""
        return epoch if self.reuse_views is None else epoch % self.reuse_views


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and batch: ``sgd`` (momentum; the KD literature's classification recipe), ``adam`` or
    ``adamw`` (``betas``; the SR literature's). ``no_decay`` trains the parameters a model lists in its
    ``no_weight_decay()`` (Vim's embeddings and SSM parameters, DVMSR's A_log and D) without weight decay, as
    those models' papers do. ``schedule``: ``cosine``, ``step`` (x0.1 at 50% and 75% of the epochs),
    ``multistep`` (x``gamma`` at each of the ``milestones`` epochs, as papers print them: the KD literature's x0.1 at
    150, 180 and 210 of 240 epochs, EDSR's and DVMSR's halvings) or ``constant``; ``steps_per_epoch`` caps the steps
    (smoke runs)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    no_decay: bool = True
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        _choice("optim", "name", self.name, ("sgd", "adam", "adamw"))
        _float("optim", "lr", self.lr, 0.0, low_open=True)
        _float("optim", "momentum", self.momentum, 0.0, 1.0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            _fail("optim", "betas", self.betas, "two numbers in [0, 1)")
        _set(self, "betas", tuple(self.betas))
        for beta in self.betas:
            _float("optim", "betas", beta, 0.0, 1.0)
            if beta >= 1:
                _fail("optim", "betas", self.betas, "two numbers in [0, 1)")
        _float("optim", "weight_decay", self.weight_decay, 0.0)
        _flag("optim", "no_decay", self.no_decay)
        _choice("optim", "schedule", self.schedule, ("cosine", "step", "multistep", "constant"))
        _int("optim", "epochs", self.epochs, 1)
        if not isinstance(self.milestones, (tuple, list)):
            _fail("optim", "milestones", self.milestones, "a list of epochs, e.g. [150, 180, 210]")
        _set(self, "milestones", tuple(self.milestones))
        for milestone in self.milestones:
            _int("optim", "milestones", milestone, 1)
        if list(self.milestones) != sorted(set(self.milestones)) or any(m >= self.epochs for m in self.milestones):
            _fail("optim", "milestones", self.milestones, f"increasing epochs below optim.epochs ({self.epochs})")
        if self.schedule == "multistep" and not self.milestones:
            _fail("optim", "milestones", self.milestones, "the epochs where schedule 'multistep' multiplies the lr")
        _float("optim", "gamma", self.gamma, 0.0, 1.0, low_open=True)
        _int("optim", "batch_size", self.batch_size, 1)
        if self.steps_per_epoch is not None:
            _int("optim", "steps_per_epoch", self.steps_per_epoch, 1)


@dataclass(frozen=True)
class MethodConfig:
    """The distillation method (``raykd.methods``: its name within the data's task, or a plugin) and the
    hyperparameters that differ from its defaults. ``student_input`` (``"hr"``/``"lr"``) overrides which input
    the student sees (an LR student under ``none`` or ``kd``, to compare with an LR method on one student)."""

    name: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)
    student_input: str | None = None

    def __post_init__(self) -> None:
        _name("method", "name", self.name)
        _set(self, "params", _mapping("method", "params", self.params))
        if self.student_input is not None:
            _choice("method", "student_input", self.student_input, ("hr", "lr"))


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher a run distils from, run in the training process: a raykd checkpoint directory (it knows its
    model), or a weights file together with ``model`` (its :class:`ModelConfig`; ``model.init_keymap`` for an
    official layout). Sweeps serve teachers through the teacher service instead (``raykd.teachers``)."""

    checkpoint: str
    model: ModelConfig | None = None

    def __post_init__(self) -> None:
        _name("teacher", "checkpoint", self.checkpoint)
        if self.model is not None and not isinstance(self.model, ModelConfig):
            _fail("teacher", "model", self.model, "a ModelConfig or None")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a run computes. ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:1"``... On CUDA the student trains under AMP (bf16 where supported, else fp16 with loss scaling) and
    channels-last when ``amp``/``channels_last`` (both on by default; ignored on CPU). ``check_data`` decodes every
    image once before training so a broken file stops the run at once; ``progress`` shows a bar per epoch."""

    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    check_data: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        _name("runtime", "device", self.device)
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            _fail("runtime", "device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:<n>'")
        for key in ("amp", "channels_last", "check_data", "progress"):
            _flag("runtime", key, getattr(self, key))


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the model trained (a teacher, or a student), its data, optimiser, method, teacher and
    runtime, and the seed every random choice derives from (initialisation, shuffling, views)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    teacher: TeacherConfig | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        for key, kind in (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig),
                          ("method", MethodConfig), ("runtime", RuntimeConfig)):
            if not isinstance(getattr(self, key), kind):
                _fail("train", key, getattr(self, key), f"a {kind.__name__}")
        if self.teacher is not None and not isinstance(self.teacher, TeacherConfig):
            _fail("train", "teacher", self.teacher, "a TeacherConfig or None")
        _int("train", "seed", self.seed, 0)


@dataclass(frozen=True)
class TeacherServiceConfig:
    """The teacher service of a sweep (``raykd.teachers.service``).

    ``replicas`` teacher actors per teacher, each with ``num_cpus``/``num_gpus``, run batches of ``batch_size``.
    The service produces each epoch's table of teacher outputs, in epoch order, up to ``ahead`` epochs beyond the
    epoch the furthest trial trains on, and keeps at most ``keep_epochs`` tables in the object store (older ones
    are read back from the persistent store when a restarted trial asks). ``mode``: ``"stored"`` (tables),
    ``"live"`` (trials send batches to the actors), or ``"auto"``: live when one epoch's table would exceed
    ``live_threshold_bytes``. ``top_k`` stores only the k largest logits of classification teachers (and their
    log-sum-exp, so the rest are restored as a uniform remainder; FKD's idea); ``None`` stores them all.
    ``precision`` (``"float16"`` or ``"float32"``) is what every teacher output reaches a student in, stored, live
    or in-process alike (:mod:`raykd.teachers.precision`); float32 tables take twice the bytes.
    """

    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 256
    ahead: int = 1
    keep_epochs: int = 4
    mode: str = "auto"
    live_threshold_bytes: int = 4 * 2**30
    top_k: int | None = None
    precision: str = "float16"

    def __post_init__(self) -> None:
        _int("teacher_service", "replicas", self.replicas, 1)
        _float("teacher_service", "num_cpus", self.num_cpus, 0.0)
        _float("teacher_service", "num_gpus", self.num_gpus, 0.0)
        _int("teacher_service", "batch_size", self.batch_size, 1)
        _int("teacher_service", "ahead", self.ahead, 0)
        _int("teacher_service", "keep_epochs", self.keep_epochs, 1)
        _choice("teacher_service", "mode", self.mode, ("auto", "stored", "live"))
        _int("teacher_service", "live_threshold_bytes", self.live_threshold_bytes, 1)
        if self.top_k is not None:
            _int("teacher_service", "top_k", self.top_k, 1)
        _choice("teacher_service", "precision", self.precision, ("float16", "float32"))


def _scaling(**kwargs: Any) -> Any:
    # Ray's own class; imported on use so that training code (which never builds a SweepConfig) runs without
    # importing Ray Train.
    from ray.train import ScalingConfig

    return ScalingConfig(**kwargs)


def _failure(**kwargs: Any) -> Any:
    from ray.tune import FailureConfig

    return FailureConfig(**kwargs)


@dataclass(frozen=True)
class SweepConfig:
    """A Ray Tune + Optuna sweep over ``methods``.

    ``scaling`` is Ray Train's ``ScalingConfig`` of one trial (``num_workers`` DDP workers, ``use_gpu``,
    ``resources_per_worker``); ``failure`` Ray Tune's ``FailureConfig`` (retries of a crashed trial, from its last
    checkpoint). ``max_concurrent_trials`` caps the trials running at once; ``None`` leaves it to Tune and the
    cluster's autoscaler (trials queue for resources, which is what makes an autoscaler add nodes). ASHA gives every
    trial ``grace_period`` epochs before it may stop it. Results go to ``<storage>/<name>/`` (a path, NFS, or an
    ``s3://``/``gs://`` URI); teacher outputs, decoded data and trained teachers to ``cache_dir``. ``seeds``
    retrains the best configuration of each method with that many seeds at the end (0: off); ``log`` may name
    ``"mlflow"`` (:mod:`raykd.tune.tracking`; TensorBoard needs nothing: Tune writes its event files anyway).
    ``verbose``: Ray Tune's own status tables (0: none, raykd's per-trial lines instead,
    :mod:`raykd.tune.progress`; 1-3: Tune's verbosity levels as well).
    """

    name: str = "sweep"
    methods: tuple[str, ...] = ("none", "kd", "dkd", "figkd", "dfd")
    num_samples: int = 16
    metric: str | None = None
    mode: str = "max"
    scaling: Any = field(default_factory=lambda: _scaling(num_workers=1, resources_per_worker={"CPU": 1}))
    failure: Any = field(default_factory=lambda: _failure(max_failures=2))
    teacher_service: TeacherServiceConfig = field(default_factory=TeacherServiceConfig)
    max_concurrent_trials: int | None = None
    grace_period: int = 1
    storage: str = "runs"
    cache_dir: str = field(default_factory=default_cache_dir)
    resume: bool = False
    seed: int = 0
    seeds: int = 3
    log: tuple[str, ...] = ()
    verbose: int = 0

    def __post_init__(self) -> None:
        _name("sweep", "name", self.name)
        if isinstance(self.methods, str) or not self.methods:
            _fail("sweep", "methods", self.methods, "a non-empty list of method names")
        _set(self, "methods", tuple(self.methods))
        for method in self.methods:
            _name("sweep", "methods", method)
        _int("sweep", "num_samples", self.num_samples, 1)
        _optional_str("sweep", "metric", self.metric)
        _choice("sweep", "mode", self.mode, ("max", "min"))
        if type(self.scaling).__name__ != "ScalingConfig":
            _fail("sweep", "scaling", self.scaling, "a ray.train.ScalingConfig")
        if type(self.failure).__name__ != "FailureConfig":
            _fail("sweep", "failure", self.failure, "a ray.tune.FailureConfig")
        if not isinstance(self.teacher_service, TeacherServiceConfig):
            _fail("sweep", "teacher_service", self.teacher_service, "a TeacherServiceConfig")
        if self.max_concurrent_trials is not None:
            _int("sweep", "max_concurrent_trials", self.max_concurrent_trials, 1)
        _int("sweep", "grace_period", self.grace_period, 1)
        _name("sweep", "storage", self.storage)
        _name("sweep", "cache_dir", self.cache_dir)
        _set(self, "cache_dir", str(CacheLayout.of(self.cache_dir, "sweep.cache_dir").root))
        _flag("sweep", "resume", self.resume)
        _int("sweep", "seed", self.seed, 0)
        _int("sweep", "seeds", self.seeds, 0)
        if isinstance(self.log, str):
            _fail("sweep", "log", self.log, "a list of logger names, e.g. ('mlflow',)")
        _set(self, "log", tuple(self.log))
        for logger in self.log:
            if logger == "tensorboard":
                _fail("sweep", "log", logger, "'mlflow' (TensorBoard needs no logger: Tune writes every trial's "
                      "event files and hparams anyway; run `tensorboard --logdir <storage>/<name>`)")
            _choice("sweep", "log", logger, ("mlflow",))
        _int("sweep", "verbose", self.verbose, 0, 3)  # Ray Tune's verbosity levels

    @property
    def workers_per_trial(self) -> int:
        return int(self.scaling.num_workers)

    @property
    def directory(self) -> str:
        """Where this sweep's results go: ``<storage>/<name>`` (local paths made absolute)."""
        if is_uri(self.storage):
            return f"{self.storage.rstrip('/')}/{self.name}"
        return str(Path(self.storage).expanduser().resolve() / self.name)


@dataclass(frozen=True)
class CacheLayout:
    """Every place raykd keeps things under one cache directory (``--cache-dir``, ``$RAYKD_CACHE``): the one place
    that says where. The cache is a path (local, or on a cluster an NFS/EFS mount at the same path on every node),
    never an ``s3://``/``gs://`` URI: datasets and trained teachers are directories written with plain file I/O
    (results may go to a URI: ``SweepConfig.storage``)."""

    root: Path

    @classmethod
    def of(cls, cache_dir: str | os.PathLike, flag: str = "--cache-dir") -> "CacheLayout":
        """The layout of ``cache_dir`` (``file://`` stripped, ``~`` expanded, made absolute); a URI is refused
        naming ``flag`` and the value."""
        text = str(cache_dir)
        text = text[len("file://"):] if text.startswith("file://") else text
        if not text or is_uri(text):
            raise ConfigError(f"{flag} {str(cache_dir)!r}: the cache holds datasets and trained teachers, so it must "
                              "be a path (on a cluster, an NFS/EFS mount at the same path on every node); results "
                              "may go to s3:// or gs:// with --storage")
        return cls(Path(text).expanduser().resolve())

    @property
    def store(self) -> Path:
        """Content-keyed tables: decoded splits and teacher outputs (:class:`raykd.data.store.Store`)."""
        return self.root / "store"

    @property
    def teachers(self) -> Path:
        """Trained teachers' checkpoint directories (:class:`raykd.teachers.trained.TrainedTeachers`)."""
        return self.root / "teachers"

    def dataset(self, name: str) -> Path:
        """A downloaded or built-in dataset's own directory."""
        return self.root / "datasets" / name

    @property
    def prometheus(self) -> Path:
        """``raykd monitor``'s Prometheus data."""
        return self.root / "prometheus"


# ---------------------------------------------------------------------------------------------- JSON edges

_NESTED = (ModelConfig, DataConfig, OptimConfig, MethodConfig, TeacherConfig, RuntimeConfig, TrainConfig,
           TeacherServiceConfig)


_RAY_CONFIGS = {"scaling": _scaling, "failure": _failure}  # SweepConfig fields holding Ray's own configs


def to_json(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a raykd config (nested dataclasses become dicts; Ray's configs their fields)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_json(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_json(v) for v in config]
    return config


def from_json(kind: type, values: Mapping[str, Any], path: str = "") -> Any:
    """Rebuild a config of class ``kind`` from :func:`to_json`'s dict; unknown keys are an error naming their
    dotted path."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path or kind.__name__}: expected a JSON object, got {values!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown {kind.__name__} keys {[where + k for k in unknown]}; valid keys: {sorted(names)}")
    hints = get_type_hints(kind)
    out = {}
    for key, value in values.items():
        nested = next((t for t in _NESTED if t.__name__ in str(hints[key])), None)
        if nested is not None and isinstance(value, Mapping):
            value = from_json(nested, value, f"{path}.{key}" if path else key)
        elif kind is SweepConfig and key in _RAY_CONFIGS and isinstance(value, Mapping):
            value = _RAY_CONFIGS[key](**value)  # Ray's ScalingConfig / FailureConfig, from their fields
        elif isinstance(value, list) and "tuple" in str(hints[key]):
            value = tuple(value)
        out[key] = value
    return kind(**out)


def override(config: Any, changes: Mapping[str, Any], _path: str = "") -> Any:
    """``config`` with the values at dotted paths replaced (``{"optim.lr": 0.1, "method.name": "kd"}``); an
    unknown field is an error naming its whole dotted path."""
    groups: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(config)}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"{type(config).__name__} has no field {head!r} (in {_path + key!r}); fields: "
                              f"{sorted(names)}")
        if rest:
            groups.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in groups.items():
        inner = direct.get(head, getattr(config, head))
        if not (dataclasses.is_dataclass(inner) and not isinstance(inner, type)):
            raise ConfigError(f"cannot set {[_path + head + '.' + k for k in sub]}: {_path + head} is {inner!r}, "
                              "not a config; set it whole")
        direct[head] = override(inner, sub, f"{_path}{head}.")
    return dataclasses.replace(config, **direct)
