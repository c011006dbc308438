"""raykd's checkpoint directory: a model's weights, what it is, and a manifest that proves the files whole.

A checkpoint is a directory::

    model.safetensors   the model's weights (loads without running any pickle)
    state.pt            training state (optimiser, scheduler, method, RNG states; training checkpoints only)
    meta.json           the model's registry name and kwargs, the run's config and metrics, and ``files``: the
                        sha256 and size of every other file, written last

:func:`read_meta` refuses a directory whose ``meta.json`` is missing or unparsable, naming the file;
:func:`verify` checks every file against the manifest, so a truncated or corrupt checkpoint (a crashed copy, a
damaged disk) is found before a model is built from it; :func:`model_entry` is the only way to the model a
``meta.json`` names, and refuses one that would run code (see :mod:`raykd.registry`).
:mod:`raykd.train.checkpoint` writes them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from raykd.models.weights import MODEL_FILE, load_weights
from raykd.registry import MODELS, UntrustedPlugin, is_import_path, trusted

__all__ = ["MODEL_FILE", "STATE_FILE", "META_FILE", "META_SCHEMA", "CheckpointError", "read_meta", "meta_schema",
           "verify", "model_entry", "manifest", "load_model", "recorded_score"]

# constructor arguments that would make a model read another file than the checkpoint's own weights (timm's)
_LOADING_KWARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                             "pretrained_strict"})

STATE_FILE = "state.pt"
META_FILE = "meta.json"
# the layout version of meta.json (its "schema" entry, written by raykd.train.checkpoint.save_checkpoint). 1: the
# first one recorded. A meta.json without one (0) was written before versions were recorded, in the same layout;
# its config lacks the fields added since, which read back at their defaults (raykd.config.from_json)
META_SCHEMA = 1


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or corrupt; the message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{file name: {"sha256", "bytes"}}`` of every file in ``directory`` but ``meta.json``."""
    directory = Path(directory)
    return {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name != META_FILE}


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a checkpoint directory, or :class:`CheckpointError` naming what is wrong."""
    directory = Path(directory)
    path = directory / META_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory: expected a raykd checkpoint directory holding "
                              f"{MODEL_FILE} and {META_FILE}")
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {directory} is not a raykd checkpoint directory")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(f"{path} does not describe a model (no 'model' entry)")
    return meta


def meta_schema(meta: dict[str, Any]) -> int:
    """The layout version of a checkpoint's metadata: its ``schema``, 0 where it was written before raykd recorded
    one."""
    return int(meta.get("schema", 0))


def model_entry(meta: dict[str, Any], source: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The ``(model name, model kwargs)`` that ``meta`` (read from the file ``source``) describes, checked: every
    model it names, nested ones too (MTKD's composite teacher), is a registered raykd model, a timm model or a
    plugin import path the user trusts (:func:`raykd.registry.trusted`); no kwarg loads another file."""
    name, kwargs = meta["model"], meta.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: model_kwargs must be a JSON object, got {kwargs!r}")
    _check_model(name, kwargs, source)
    return name, dict(kwargs)


def _check_model(name: Any, kwargs: dict[str, Any], source: str | os.PathLike) -> None:
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: the model name must be a non-empty string, got {name!r}")
    if is_import_path(name) and not trusted(name):
        raise UntrustedPlugin(
            f"{source} names the model {name!r}, an import path: raykd does not import code that a data file names. "
            f"If you trust this checkpoint, name the model on the command line (e.g. --teacher-model {name}) or "
            "pass --trust-plugins")
    if not is_import_path(name) and not MODELS.has(name) and not _is_timm_model(name):
        raise CheckpointError(f"{source} names the model {name!r}, which is neither a raykd model "
                              f"({', '.join(MODELS.names())}) nor a timm model")
    loading = sorted(_LOADING_KWARGS & set(kwargs))
    if loading:
        raise CheckpointError(f"{source}: model_kwargs {loading} would load weights from elsewhere; a checkpoint's "
                              f"weights are its own {MODEL_FILE}")
    for value in kwargs.values():  # nested models: {"model": ..., "model_kwargs": ...} entries, at any depth
        for entry in value if isinstance(value, list) else [value]:
            if isinstance(entry, dict) and "model" in entry:
                _check_model(entry["model"], entry.get("model_kwargs") or {}, source)


def _is_timm_model(name: str) -> bool:
    import timm

    return ":" not in name and timm.is_model(name)


# checkpoints this process verified, by directory: the (name, size, mtime) of meta.json and of every file of the
# manifest when they were hashed. A directory whose files still stat the same is not hashed again (finding a
# checkpoint, resuming from it and building its model each verify it; the files are read once)
_VERIFIED: dict[Path, tuple[tuple[str, int, int], ...]] = {}


def _stats(directory: Path, names: list[str]) -> tuple[tuple[str, int, int], ...]:
    stats = ((name, (directory / name).stat()) for name in [META_FILE, *names])
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


def verify(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``meta.json`` and check every file of its manifest (size, sha256); return the metadata. A directory
    this process verified before is hashed again only when a file's size or modification time changed."""
    directory = Path(directory)
    meta = read_meta(directory)
    files = meta.get("files") or {}
    for name in files:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} is missing from the checkpoint")
    if not (directory / MODEL_FILE).is_file():
        raise CheckpointError(f"{directory / MODEL_FILE} is missing from the checkpoint")
    key, stats = directory.absolute(), _stats(directory, sorted(files))
    if _VERIFIED.get(key) == stats:
        return meta
    for name, expected in files.items():
        path = directory / name
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path} does not match the checkpoint's manifest (truncated or modified: "
                                  f"{path.stat().st_size} bytes, expected {expected['bytes']})")
    _VERIFIED[key] = stats
    return meta


def load_model(directory: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load a verified checkpoint directory's weights into ``model`` (strict). A model that reports its
    ``variant`` (DVMSR: whether its ViMMs keep their residual) must be the variant the checkpoint was trained as:
    both have the same weights' names, so a strict load alone would accept the wrong one silently."""
    meta = verify(directory)
    variant = getattr(model, "variant", None)
    saved = meta.get("variant")
    if variant is not None and saved is not None and dict(saved) != dict(variant):
        raise CheckpointError(f"{Path(directory) / META_FILE}: this checkpoint holds a {meta['model']} of variant "
                              f"{saved}, not {variant}; build the model with those kwargs")
    return load_weights(model, directory)


def recorded_score(directory: str | os.PathLike | None, metric: str) -> float | None:
    """The ``metric`` a raykd checkpoint directory recorded for the weights it holds (its epoch's validation
    score), or None where there is no such record: released weights, a moved or damaged directory."""
    if directory is None:
        return None
    try:
        value = read_meta(directory).get(metric)
    except CheckpointError:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
