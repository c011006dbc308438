"""The distillation-method contract the trainer relies on, and the method registry.

A method (mdistiller-style) declares which named outputs it needs from the teacher and the student, may build
its own learnable modules once the output shapes are known (:meth:`Method.bind`), and turns those outputs into
a dict of named, already-weighted loss terms. The trainer sums the terms and logs each one, so a new method
adds entries here, not trainer code.

Output names used by the trainer's capture hooks:

- ``"logits"``: the classifier output ``(B, num_classes)``;
- ``"penultimate"``: the input of the classifier head;
- ``"stage:<k>"``: the output of stage ``k`` of the network, indexed like a Python list (``stage:0`` is the
  first stage, ``stage:-1`` the last).
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Method", "Outputs", "Shapes", "register_method", "create_method", "list_methods", "method_defaults"]

Outputs = dict[str, Tensor]
"""Named model outputs (or loss terms), batch-first tensors."""
Shapes = dict[str, tuple[int, ...]]
"""Named per-sample output shapes (no batch dimension)."""

_TASKS = ("cls", "sr")
_INPUTS = ("hr", "lr")


class Method(nn.Module):
    """Base class of every distillation method (and of the ``none`` baseline).

    Class attributes:
        name: registry key.
        task: ``"cls"`` or ``"sr"``.
        student_input: which input the student sees, ``"hr"`` or ``"lr"``.
        defaults: every hyperparameter with its paper default; sweeps read this, and constructor keys outside
            it are rejected.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "cls"
    student_input: ClassVar[str] = "hr"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__()
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = sorted(self.defaults) or "none (this method takes no parameters)"
            raise ValueError(f"method {self.name!r}: unknown parameter(s) {unknown}; allowed: {allowed}")
        self.params: dict[str, Any] = {**self.defaults, **params}

    def teacher_outputs(self) -> tuple[str, ...]:
        """Named outputs the teacher must provide; ``()`` when the method needs no teacher."""
        return ()

    def student_outputs(self) -> tuple[str, ...]:
        """Named outputs the student's forward must capture (always including ``"logits"`` for ``cls``)."""
        return ("logits",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        """Called once by the trainer with per-sample output shapes (no batch dimension) after a probe forward.

        Methods with learnable parts (FitNet's regressor) create them here. The trainer must move the method to
        its device after ``bind`` and include ``method.parameters()`` in the optimizer it builds afterwards.
        """

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        """Named loss terms, already weighted; the trainer sums them and logs each.

        ``epoch`` is the 1-based index of the current training epoch (mdistiller's convention), used by
        schedules such as DKD's warm-up.
        """
        raise NotImplementedError(f"method {self.name!r} does not implement forward()")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


_METHODS: dict[tuple[str, str], type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a :class:`Method` subclass to the registry under ``(cls.task, cls.name)``: the
    same name may exist once per task (``none`` is cross-entropy alone for ``cls``, L1 to the HR image for
    ``sr``)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_method: {cls.__qualname__} must define a non-empty class attribute `name`")
    if cls.task not in _TASKS:
        raise ValueError(f"register_method: {name!r} has task {cls.task!r}; expected one of {_TASKS}")
    key = (cls.task, name)
    if key in _METHODS and _METHODS[key] is not cls:
        raise ValueError(f"register_method: {cls.task} method {name!r} already registered by "
                         f"{_METHODS[key].__qualname__}")
    if cls.student_input not in _INPUTS:
        raise ValueError(
            f"register_method: {name!r} has student_input {cls.student_input!r}; expected one of {_INPUTS}"
        )
    _METHODS[key] = cls
    return cls


def _lookup(name: str, task: str) -> type[Method]:
    if (task, name) not in _METHODS:
        raise ValueError(f"unknown {task} method {name!r}; available: {list_methods(task)}")
    return _METHODS[task, name]


def create_method(name: str, task: str = "cls", **params: Any) -> Method:
    """Instantiate the registered ``task`` method ``name`` with ``params`` overriding its defaults."""
    return _lookup(name, task)(**params)


def list_methods(task: str = "cls") -> list[str]:
    """Registered method names of ``task``, sorted."""
    return sorted(name for t, name in _METHODS if t == task)


def method_defaults(name: str, task: str = "cls") -> dict[str, Any]:
    """A copy of the method's hyperparameter defaults."""
    return dict(_lookup(name, task).defaults)
