"""raykd.methods: distillation methods behind one contract (:class:`Method`) and a name registry.

Importing this package registers the built-in classification methods (``none``, ``kd``, ``dkd``, ``figkd``,
``dfd``, ``fitnet``, ``at``) and super-resolution methods (``none``, ``l1kd``, ``mtkd``).
"""
from __future__ import annotations

from raykd.methods import classification
from raykd.methods import sr
from raykd.methods.base import (
    Method,
    Outputs,
    Shapes,
    create_method,
    list_methods,
    method_defaults,
    register_method,
)

__all__ = [
    "Method",
    "Outputs",
    "Shapes",
    "classification",
    "create_method",
    "list_methods",
    "method_defaults",
    "register_method",
    "sr",
]
