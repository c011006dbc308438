"""PLACEHOLDER until the fidelity branch lands (it brings key maps): weights files into any model."""
from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found at {path}")
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "params_ema", "params"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state


def load_weights(model: nn.Module, path: str | os.PathLike, keymap=None, strict: bool = True) -> nn.Module:
    state = read_state_dict(path)
    result = model.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(f"weights in {path} do not fit {type(model).__name__}: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return model
