"""Named model constructors, in the manner of timm's registry.

``create_model("resnet8x4", num_classes=100)`` builds a raykd model; any name raykd does not define is handed
to ``timm.create_model`` so every timm classifier is available under its timm name.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register ``fn`` under ``name`` (default: the function's own name). Usable bare or with arguments."""

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model name {key!r} is registered twice ({_MODELS[key].__module__} and {f.__module__})")
        _MODELS[key] = f
        return f

    return add(fn) if fn is not None else add


def list_models() -> list[str]:
    """Names raykd itself defines (timm's are listed by ``timm.list_models()``)."""
    return sorted(_MODELS)


def is_registered(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, **kwargs) -> nn.Module:
    """Build model ``name``: a raykd registry entry, else a timm model of that name."""
    if name in _MODELS:
        return _MODELS[name](**kwargs)
    import timm

    if not timm.is_model(name):
        raise KeyError(
            f"unknown model {name!r}: not a raykd model ({', '.join(list_models())}) and not a timm model "
            "(see timm.list_models())"
        )
    return timm.create_model(name, **kwargs)
