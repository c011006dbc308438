"""raykd.methods: distillation methods behind one contract (:class:`Method`) and a name registry.

Importing this package registers the built-in classification methods (``none``, ``kd``, ``dkd``, ``figkd``,
``dfd``, ``fitnet``, ``at``, and ``vimd`` from :mod:`raykd.methods.vimd`) and super-resolution methods (``none``,
``l1kd``, ``mtkd``, and ``dvmsr`` from :mod:`raykd.methods.dvmsr`).
"""
from __future__ import annotations

from raykd.methods import classification
from raykd.methods import dvmsr
from raykd.methods import mtkd  # noqa: F401  (registers the mtkd_teacher model)
from raykd.methods import sr
from raykd.methods import vimd
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
    "dvmsr",
    "list_methods",
    "method_defaults",
    "register_method",
    "sr",
    "vimd",
]
