"""Training checkpoints: model weights, optimiser, scheduler, method state, epoch and every RNG state.

A checkpoint is a directory::

    model.safetensors   the model's weights (loads without running any pickle)
    state.pt            optimiser, scheduler, method (e.g. a FitNet regressor), RNG states; loaded weights_only
    meta.json           what was trained (model name and kwargs, method, epoch, metrics): enough to rebuild it

It is written under a temporary name and renamed when complete, so a crash never leaves a half-written
checkpoint under the final name. Resuming restores the RNG states too, so a resumed run reproduces the
uninterrupted one exactly (on CPU).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    method: nn.Module | None = None,
) -> Path:
    """Write a checkpoint to ``directory`` atomically (replacing an older one there) and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE))
        state: dict[str, Any] = {"rng": capture_rng()}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if method is not None:
            state["method"] = method.state_dict()
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a raykd checkpoint directory")
    return json.loads(path.read_text())


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    method: nn.Module | None = None,
    restore_rng_state: bool = True,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote into the given objects; returns the metadata."""
    directory = Path(directory)
    meta = read_meta(directory)
    load_model_weights(model, directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if method is not None and "method" in state:
        method.load_state_dict(state["method"])
    if restore_rng_state:
        restore_rng(state["rng"])
    return meta


def load_model_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load weights into ``model`` (strict) from a checkpoint directory, a ``.safetensors`` file, or a torch
    state-dict file (read with ``weights_only=True``; ``{"state_dict": ...}``/``{"model": ...}`` wrappers accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found at {path}")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
    result = unwrap(model).load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights in {path} do not fit {type(unwrap(model)).__name__}: "
            f"missing {result.missing_keys[:5]}{'...' if len(result.missing_keys) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
