"""Where a training step gets its teacher outputs from.

A teacher source is asked for a batch's outputs with ``request(batch)`` (the batch dict holds at least ``hr``,
``index`` and ``view``) and returns a function that yields ``{output name: tensor}``. The trainer requests
before its own forward and collects after it, so a teacher in another process (a Ray actor, live mode) works
while the student computes. The trainer does not care whether the outputs come from a model in the same
process, from the shared cache, or from an actor.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn as nn

from raykd.models.features import forward_features
from raykd.teachers.cache import CacheEntry

Fetch = Callable[[], dict[str, torch.Tensor]]


class TeacherSource(Protocol):
    outputs: tuple[str, ...]

    def request(self, batch: dict[str, torch.Tensor]) -> Fetch: ...


@torch.no_grad()
def run_teacher(model: nn.Module, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
    """The frozen teacher's requested outputs for input ``x`` (autocast to half precision on CUDA), as float32."""
    device = next(model.parameters()).device
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        out = forward_features(model, x, outputs)
    return {name: out[name].float() for name in outputs}


class InProcessTeacher:
    """Runs a frozen teacher in the training process itself (no Ray involved) on the batch's ``input_key``
    entry (the HR view for classification, the LR patch for super-resolution) with ``forward`` (the task's
    teacher forward; default :func:`run_teacher`)."""

    def __init__(self, model: nn.Module, outputs: Sequence[str], input_key: str = "hr",
                 forward: Callable[[nn.Module, torch.Tensor, Sequence[str]], dict[str, torch.Tensor]] = run_teacher):
        self.model = model
        self.outputs = tuple(outputs)
        self.input_key = input_key
        self.forward = forward
        self.samples_computed = 0

    def request(self, batch: dict[str, torch.Tensor]) -> Fetch:
        out = {k: v.float() for k, v in self.forward(self.model, batch[self.input_key], self.outputs).items()}
        self.samples_computed += len(batch[self.input_key])
        return lambda: out


class CachedTeacher:
    """Serves teacher outputs computed once, looked up by (sample index, view): no teacher forward at all.

    ``entry`` is a :class:`raykd.teachers.cache.CacheEntry`, typically fetched from Ray's object store, where
    every trial of a sweep shares one copy.
    """

    def __init__(self, entry: CacheEntry, outputs: Sequence[str]):
        missing = [name for name in outputs if name not in entry.outputs]
        if missing:
            raise KeyError(f"cached teacher outputs lack {missing}; the cache holds {list(entry.outputs)}")
        self.entry = entry
        self.outputs = tuple(outputs)
        self.hits = 0

    def request(self, batch: dict[str, torch.Tensor]) -> Fetch:
        found = self.entry.lookup(batch["index"].numpy(), batch["view"].numpy(), self.outputs)
        self.hits += len(batch["index"])
        out = {name: torch.tensor(value, dtype=torch.float32) for name, value in found.items()}
        return lambda: out
