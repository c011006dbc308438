"""One way from a model's name and weights to a network, for every path that needs one: the student
(``--init-from``), a teacher (its checkpoint, and the bytes its actors get), a sweep's trials measured on test
sets, ``raykd eval-sr``, ``raykd evaluate`` and ``raykd.load_student``.

``build_model(name, kwargs, weights)`` builds ``name`` with ``kwargs`` (:func:`raykd.models.create_model`: a raykd
registry name, a timm model or a plugin ``"pkg.mod:fn"``) and loads ``weights``:

- ``None``: the model's own initialisation;
- a raykd checkpoint directory: verified against its manifest once per load (one sha256 of each file, then the
  weights are read) and loaded strictly; :func:`checkpoint_entry` says which model its ``meta.json`` names,
  refusing one that would run code the user does not trust (:func:`raykd.models.checkpoint.model_entry`);
- a released weights file (``.pth``/``.pt``/``.safetensors``), through ``keymap``, the official layout's key map
  (:mod:`raykd.models.weights`);
- the safetensors bytes of a state dict (what the teacher service sends its actors), or a state dict.

``adapt_head=True`` starts a classifier of another number of classes from weights whose classifier head has other
shapes (an ImageNet checkpoint started on CUB, ViMD's HRVM-Net): that head is left out and the model keeps its own,
freshly initialised one; a head that fits is loaded.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import safetensors.torch
import torch
import torch.nn as nn
from torch import Tensor

from raykd.console import UserError
from raykd.models.checkpoint import META_FILE, load_model, model_entry, read_meta, verify
from raykd.models.registry import create_model
from raykd.models.weights import load_weights

__all__ = ["Weights", "build_model", "checkpoint_entry"]

Weights = Union[str, os.PathLike, bytes, Mapping[str, Tensor], None]
_KINDS = ("a raykd checkpoint directory, a weights file (.pth/.pt/.safetensors), the safetensors bytes of a state "
          "dict, a state dict, or None")


def checkpoint_entry(directory: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The ``(model name, kwargs)`` the ``meta.json`` of checkpoint ``directory`` names, checked: no import path the
    user does not trust, no kwarg that loads another file (:func:`raykd.models.checkpoint.model_entry`)."""
    return model_entry(read_meta(directory), Path(directory) / META_FILE)


def build_model(name: str, kwargs: Mapping[str, Any] | None = None, weights: Weights = None, *,
                keymap: str | None = None, adapt_head: bool = False, device: torch.device | str | None = None,
                frozen: bool = False) -> nn.Module:
    """Model ``name`` built with ``kwargs``, with ``weights`` loaded (module docstring): every mismatch named with
    the file, before anything is copied. ``frozen``: in eval mode with gradients off (a teacher, a model measured);
    ``device``: moved there."""
    model = create_model(name, **dict(kwargs or {}))
    if weights is not None:
        _load(model, weights, keymap, adapt_head)
    if frozen:
        model.eval().requires_grad_(False)
    return model if device is None else model.to(device)


def _load(model: nn.Module, weights: Weights, keymap: str | None, adapt_head: bool) -> None:
    if isinstance(weights, (bytes, bytearray)):
        weights = safetensors.torch.load(bytes(weights))
    if isinstance(weights, Mapping):
        load_weights(model, weights, keymap, adapt_head=adapt_head)
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise UserError(f"weights {weights!r} ({type(weights).__name__}): expected {_KINDS}")
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"weights {path} do not exist: give a raykd checkpoint directory or a weights file "
                                "(.pth/.pt/.safetensors)")
    if not (path / META_FILE).is_file():  # a weights file (or a directory that is no raykd checkpoint: said so)
        load_weights(model, path, keymap, adapt_head=adapt_head)
    elif keymap is None and not adapt_head:
        load_model(path, model)  # verifies it (and the model's variant, where it has one) and loads it strictly
    else:  # a head that does not fit is left out, which the strict checkpoint load would refuse
        verify(path)
        load_weights(model, path, keymap, adapt_head=adapt_head)
