"""Building models by name: raykd's own (:data:`raykd.registry.MODELS`), any timm model, or a plugin.

``create_model("resnet8x4", num_classes=100)`` builds a raykd model; a name raykd does not define is handed to
``timm.create_model``, so every timm classifier is available under its timm name; ``"pkg.mod:fn"`` calls a
user's own constructor.
"""
from __future__ import annotations

import torch.nn as nn

from raykd.registry import MODELS, is_import_path

__all__ = ["create_model", "check_model_name", "register_model"]

register_model = MODELS.register


def create_model(name: str, **kwargs) -> nn.Module:
    """Build model ``name``: a raykd registry entry or plugin import path, else a timm model of that name."""
    if MODELS.has(name) or is_import_path(name):
        return MODELS.get(name)(**kwargs)
    check_model_name(name)
    import timm

    return timm.create_model(name, **kwargs)


def check_model_name(name: str) -> None:
    """Refuse a model name nothing defines (a plugin path is imported, to prove it resolves), listing what exists;
    cheap: builds nothing."""
    if MODELS.has(name):
        return
    if is_import_path(name):
        MODELS.get(name)
        return
    import timm

    if not timm.is_model(name):
        raise KeyError(f"unknown model {name!r}: not a raykd model ({', '.join(MODELS.names())}), not a timm "
                       "model (see timm.list_models()) and not a plugin 'package.module:function'")
