"""What a teacher is: a named, frozen model built from the registry and a weights file.

Teachers are always handled in name order (MTKD has three), always in eval mode with gradients off. A spec is
plain data, so it travels to Ray actors and into cache keys unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn

from raykd.models import create_model
from raykd.train.checkpoint import MODEL_FILE, load_model_weights, read_meta


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: ``name`` (unique within a run), registry ``model`` name, its kwargs and its weights file."""

    name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str | None = None) -> "TeacherSpec":
        """A spec for a raykd checkpoint directory (its ``meta.json`` says which model it holds)."""
        meta = read_meta(path)
        return cls(name=name or meta["model"], model=meta["model"], model_kwargs=meta["model_kwargs"],
                   checkpoint=str(Path(path).resolve()))

    def weights_file(self) -> Path | None:
        if self.checkpoint is None:
            return None
        path = Path(self.checkpoint)
        return path / MODEL_FILE if path.is_dir() else path

    def weights_bytes(self) -> bytes | None:
        """The weights file's content, for processes on other nodes that cannot read the path."""
        path = self.weights_file()
        return path.read_bytes() if path is not None else None

    def build(self, device: torch.device | str = "cpu", weights: bytes | None = None) -> nn.Module:
        """The frozen teacher on ``device``: weights loaded (from ``weights``, the bytes of a safetensors file,
        when given; else from the checkpoint path), eval mode, no gradients. On CUDA it runs in channels-last
        layout (the cast to half precision is done by the caller's autocast)."""
        model = create_model(self.model, **self.model_kwargs)
        if weights is not None:
            model.load_state_dict(safetensors.torch.load(weights), strict=True)
        elif self.checkpoint is not None:
            load_model_weights(model, self.checkpoint)
        model.eval().requires_grad_(False)
        device = torch.device(device)
        model.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        return model

    def identity(self) -> dict[str, Any]:
        """Everything that determines this teacher's outputs, for cache keys: the weights' sha256, not their path."""
        from raykd.teachers.cache import file_sha256

        weights = self.weights_file()
        if weights is None:
            raise ValueError(f"teacher {self.name!r} has no weights file: a teacher's outputs are cached by its weights")
        return {"name": self.name, "weights_sha256": file_sha256(weights),
                "config": {"model": self.model, "model_kwargs": self.model_kwargs}}


def sorted_specs(specs: list[TeacherSpec]) -> list[TeacherSpec]:
    """Teachers in name order; duplicate names are an error."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    return sorted(specs, key=lambda s: s.name)
