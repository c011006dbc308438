"""What a teacher is: a named, frozen model built from the registry and a weights file.

Teachers are always handled in name order (MTKD has three), always in eval mode with gradients off. A spec is
plain data, so it travels to Ray actors and into content keys unchanged; its weights travel as safetensors bytes,
so actors on other nodes need no shared disk.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn

from raykd.config import ModelConfig, TeacherConfig
from raykd.console import UserError
from raykd.data.store import file_sha256
from raykd.models import create_model
from raykd.models.checkpoint import META_FILE, MODEL_FILE, CheckpointError, load_model, model_entry, verify
from raykd.models.weights import load_weights

__all__ = ["TeacherSpec", "sorted_specs"]


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: ``name`` (unique within a run), registry ``model`` name, its kwargs, and ``checkpoint``: a raykd
    checkpoint directory or a weights file (``keymap``: the official layout of that file, if not raykd's)."""

    name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    keymap: str | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str | None = None) -> "TeacherSpec":
        """A spec for a raykd checkpoint directory (verified against its manifest; its ``meta.json`` says which
        model it holds, and may name only models that run no code of its own: :func:`model_entry`)."""
        model, kwargs = model_entry(verify(path), Path(path) / META_FILE)
        return cls(name=name or model, model=model, model_kwargs=kwargs, checkpoint=str(Path(path).resolve()))

    def as_config(self) -> TeacherConfig:
        """This teacher as a :class:`TeacherConfig` (what a trial served by the teacher service records):
        :meth:`from_config` of it gives this spec back."""
        model = ModelConfig(self.model, dict(self.model_kwargs), init_keymap=self.keymap)
        return TeacherConfig(self.checkpoint, model)

    @classmethod
    def from_config(cls, teacher: TeacherConfig, name: str | None = None) -> "TeacherSpec":
        """The teacher a :class:`TeacherConfig` names: a checkpoint directory, or a weights file with its model."""
        path = Path(teacher.checkpoint).expanduser()
        if path.is_dir():
            return cls.from_checkpoint(path, name)
        if not path.is_file():
            raise FileNotFoundError(f"teacher checkpoint {path} does not exist: give a raykd checkpoint directory "
                                    "(from `raykd train`) or a weights file with its model")
        if teacher.model is None:
            raise ValueError(f"teacher {path} is a weights file, not a raykd checkpoint directory: say which model "
                             "it holds (TeacherConfig.model; `raykd distill --teacher-model NAME`)")
        model: ModelConfig = teacher.model
        return cls(name=name or model.name, model=model.name, model_kwargs=dict(model.kwargs),
                   checkpoint=str(path.resolve()), keymap=model.init_keymap)

    @property
    def weights_file(self) -> Path:
        if self.checkpoint is None:
            raise ValueError(f"teacher {self.name!r} has no weights: a frozen teacher needs trained weights")
        path = Path(self.checkpoint)
        return path / MODEL_FILE if path.is_dir() else path

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_file)

    def identity(self) -> dict[str, Any]:
        """Everything that determines this teacher's outputs, for content keys: the weights' sha256, not their
        path."""
        return {"name": self.name, "weights_sha256": self.weights_sha256,
                "config": {"model": self.model, "model_kwargs": self.model_kwargs, "keymap": self.keymap}}

    def load(self) -> nn.Module:
        """The model with its weights, on the CPU (errors name the file and what does not fit)."""
        model = create_model(self.model, **self.model_kwargs)
        path = Path(self.checkpoint) if self.checkpoint is not None else None
        if path is None:
            raise ValueError(f"teacher {self.name!r} has no weights: a frozen teacher needs trained weights")
        if path.is_dir():
            return load_model(path, model)
        try:
            return load_weights(model, path, keymap=self.keymap)
        except UserError:
            raise  # the file is no weights file at all (empty, truncated, another format): said as it is
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"teacher {self.name!r}: weights {path} do not fit {self.model}: {err}") from None

    def weights_bytes(self) -> bytes:
        """The loaded weights as safetensors bytes: what teacher actors on any node build the teacher from."""
        return safetensors.torch.save({k: v.contiguous() for k, v in self.load().state_dict().items()})

    def build(self, device: torch.device | str = "cpu", weights: bytes | None = None,
              channels_last: bool = True) -> nn.Module:
        """The frozen teacher on ``device`` (from ``weights``, the bytes of :meth:`weights_bytes`, when given):
        eval mode, no gradients, channels-last on CUDA (half precision comes from the caller's autocast)."""
        if weights is not None:
            model = create_model(self.model, **self.model_kwargs)
            model.load_state_dict(safetensors.torch.load(weights), strict=True)
        else:
            model = self.load()
        model.eval().requires_grad_(False)
        device = torch.device(device)
        model.to(device)
        if device.type == "cuda" and channels_last:
            model.to(memory_format=torch.channels_last)
        return model


def sorted_specs(specs: list[TeacherSpec]) -> list[TeacherSpec]:
    """Teachers in name order; duplicate names are an error."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    return sorted(specs, key=lambda s: s.name)
