"""Training checkpoints: the model (a :mod:`raykd.models.checkpoint` directory) plus everything a resumed run
needs to continue exactly: optimiser, scheduler, loss scaler, method state, every RNG state, the epoch, the
metrics and the run's counters.

A new checkpoint is written to a temporary sibling directory, then swapped in by renames: the old one is renamed
to ``<dir>.old``, the new one to ``<dir>``, and only then is the old one deleted. A crash at any point leaves a
complete checkpoint under ``<dir>`` or ``<dir>.old``, and :func:`find_checkpoint` returns whichever is complete
(checked against its manifest), so ``--resume`` always finds one. Resuming restores the RNG states too, so a
resumed run reproduces the uninterrupted one exactly (on CPU).
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
from safetensors.torch import save_file

from raykd.models.checkpoint import (META_FILE, META_SCHEMA, MODEL_FILE, STATE_FILE, CheckpointError, load_model,
                                     manifest, verify)
from raykd.models.features import unwrap_model

__all__ = ["save_checkpoint", "load_checkpoint", "find_checkpoint", "capture_rng", "restore_rng"]


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss), "torch": torch.get_rng_state()}
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


def save_checkpoint(directory: str | os.PathLike, *, model: nn.Module, meta: dict[str, Any],
                    state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint to ``directory`` (replacing an older one there without ever leaving none) and return its
    path. ``state``: state dicts to restore on resume (``optimizer``, ``scheduler``, ``scaler``, ``method``); RNG
    states are added. ``meta`` gets the manifest of the files and the layout version (``schema``,
    :data:`~raykd.models.checkpoint.META_SCHEMA`)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    old = directory.with_name(directory.name + ".old")
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in unwrap_model(model).state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE))
        if state is not None:
            torch.save({**state, "rng": capture_rng()}, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({**meta, "schema": META_SCHEMA, "files": manifest(tmp)}, indent=2,
                                                sort_keys=True, default=str))
        if directory.exists():
            if old.exists():  # left by a crash after the last swap: the current one is complete
                shutil.rmtree(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The complete checkpoint at ``directory``, or at ``<directory>.old`` after a crash mid-swap, or ``None``."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / META_FILE).is_file():
            try:
                verify(candidate)
                return candidate
            except CheckpointError:
                continue
    return None


def load_checkpoint(directory: str | os.PathLike, *, model: nn.Module, restore: dict[str, Any] | None = None,
                    rng: bool = True) -> dict[str, Any]:
    """Restore a checkpoint's weights into ``model`` and its saved state into the objects of ``restore`` (name ->
    object with ``load_state_dict``); restore RNG states when ``rng``. Returns the metadata."""
    meta = verify(directory)
    load_model(directory, unwrap_model(model))
    if restore or rng:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        for name, target in (restore or {}).items():
            if name in state:
                target.load_state_dict(state[name])
        if rng:
            restore_rng(state["rng"])
    return meta
