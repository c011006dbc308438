"""The plain configuration one training run takes (a teacher's training or a student's distillation).

It is a flat dataclass so it round-trips through JSON, Ray Tune configs and checkpoint metadata unchanged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    task: str = "cls"  # "cls" (classification) or "sr" (super-resolution)
    # model being trained (the student, or a teacher trained with method "none")
    model: str = "resnet8x4"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # distillation: method name and its hyperparameters (see raykd.methods); "none" trains alone
    method: str = "none"
    method_params: dict[str, Any] = field(default_factory=dict)
    student_input: str | None = None  # "hr"/"lr" overrides the method's own (LR student under none/kd)
    # teacher checkpoint directory or weights file (raykd checkpoint dirs know their model; a bare weights
    # file needs teacher_model/teacher_kwargs)
    teacher: str | None = None
    teacher_model: str | None = None
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    data: str = "demo"  # dataset kind, see raykd.data.classification.open_dataset
    data_root: str | None = None
    image_size: int = 32
    lr_factor: int = 4  # low-resolution input (methods whose student sees LR): down by this factor
    lr_mode: str = "down_up"  # "down" (small input) or "down_up" (DFD: back up to image_size)
    num_views: int = 1  # K replayable augmented views per sample; epoch e uses view e mod K
    crop_padding: int = 4
    flip: bool = True
    # super-resolution (task "sr"): data is "demo_sr", "paired", "hr_folder" or "div2k" (raykd.data.sr)
    scale: int = 4
    patch_size: int = 48  # LR patch side; the HR patch is patch_size * scale
    patches_per_image: int = 1  # random patches drawn from each training image per epoch
    rot90: bool = True  # random quarter turns of SR patches (horizontal flips follow `flip`)
    val_data: str | None = None  # None: the demo's / DIV2K's val split, or "paired" when val_root is set
    val_root: str | None = None  # e.g. a Set5 folder in the benchmark layout
    tile: int = 128  # whole-image SR inference (evaluation, teacher cache) in LR tiles of this side; 0: untiled
    tile_overlap: int = 16
    # optimisation
    optimizer: str = "sgd"  # "sgd" (classification) or "adam" (super-resolution)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine", "step" (x0.1 at 50% and 75% of the epochs) or "constant"
    steps_per_epoch: int | None = None  # cap on training steps per epoch (smoke runs)
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU
    num_workers: int = 0  # DataLoader worker processes
    check_data: bool = True  # open every image before training (a sweep checks once, its trials skip it)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
