"""raykd.methods: distillation methods behind one contract (:class:`Method`), registered in
:data:`raykd.registry.METHODS` by task.

Importing this package registers the classification methods (``none``, ``kd``, ``dkd``, ``figkd``, ``dfd``,
``fitnet``, ``at``, ``vimd``) and the super-resolution methods (``none``, ``l1kd``, ``fakd``, ``mtkd``, ``dvmsr``).
"""
from __future__ import annotations

from raykd.methods import classification, dvmsr, sr, vimd  # noqa: F401  (registration)
from raykd.methods.base import Choice, Float, Int, Method, Outputs, Param, Shapes, create_method, method_class
from raykd.methods.sr import SRMethod

__all__ = ["Choice", "Float", "Int", "Method", "Outputs", "Param", "SRMethod", "Shapes", "create_method",
           "method_class"]
