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
from raykd.models.build import build_model
from raykd.models.checkpoint import META_FILE, MODEL_FILE, CheckpointError, model_entry, verify

__all__ = ["TeacherSpec", "sorted_specs"]


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: ``name`` (unique within a run), registry ``model`` name, its kwargs, and ``checkpoint``: a raykd
    checkpoint directory or a weights file (``keymap``: the official layout of that file, if not raykd's).
    ``digest``: the weights file's sha256 where it is already known (a checkpoint's verified manifest records
    it), so that the teacher's identity hashes nothing again."""

    name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    keymap: str | None = None
    digest: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str | None = None) -> "TeacherSpec":
        """A spec for a raykd checkpoint directory (verified against its manifest; its ``meta.json`` says which
        model it holds, and may name only models that run no code of its own: :func:`model_entry`)."""
        meta = verify(path)
        model, kwargs = model_entry(meta, Path(path) / META_FILE)
        digest = ((meta.get("files") or {}).get(MODEL_FILE) or {}).get("sha256")
        return cls(name=name or model, model=model, model_kwargs=kwargs, checkpoint=str(Path(path).resolve()),
                   digest=digest)

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
    def weights_path(self) -> Path:
        """The checkpoint directory or weights file."""
        if self.checkpoint is None:
            raise ValueError(f"teacher {self.name!r} has no weights: a frozen teacher needs trained weights")
        return Path(self.checkpoint)

    @property
    def weights_file(self) -> Path:
        return self.weights_path / MODEL_FILE if self.weights_path.is_dir() else self.weights_path

    @cached_property
    def weights_sha256(self) -> str:
        return self.digest or file_sha256(self.weights_file)

    def identity(self) -> dict[str, Any]:
        """Everything that determines this teacher's outputs, for content keys: the weights' sha256, not their
        path."""
        return {"name": self.name, "weights_sha256": self.weights_sha256,
                "config": {"model": self.model, "model_kwargs": self.model_kwargs, "keymap": self.keymap}}

    def load(self) -> nn.Module:
        """The model with its weights, on the CPU (errors name the file and what does not fit)."""
        path = self.weights_path
        try:
            return build_model(self.model, self.model_kwargs, path, keymap=self.keymap)
        except (UserError, CheckpointError):
            raise  # no weights file at all (empty, truncated, another format) or a damaged checkpoint: said as it is
        except ValueError as err:  # the weights are another network's
            raise CheckpointError(f"teacher {self.name!r}: weights {path} do not fit {self.model}: {err}") from None

    def weights_bytes(self) -> bytes:
        """The loaded weights as safetensors bytes: what teacher actors on any node build the teacher from."""
        return safetensors.torch.save({k: v.contiguous() for k, v in self.load().state_dict().items()})

    def build(self, device: torch.device | str = "cpu", weights: bytes | None = None,
              channels_last: bool = True) -> nn.Module:
        """The frozen teacher on ``device`` (from ``weights``, the bytes of :meth:`weights_bytes`, when given):
        eval mode, no gradients, channels-last on CUDA (half precision comes from the caller's autocast)."""
        device = torch.device(device)
        model = self.load() if weights is None else build_model(self.model, self.model_kwargs, weights)
        model.eval().requires_grad_(False).to(device)
        if device.type == "cuda" and channels_last:
            model.to(memory_format=torch.channels_last)
        return model


def sorted_specs(specs: list[TeacherSpec]) -> list[TeacherSpec]:
    """Teachers in name order; duplicate names are an error."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    return sorted(specs, key=lambda s: s.name)
