"""The distillation-method contract (mdistiller's, extended): each method owns its hyperparameters (defaults,
valid values and the sweep's search space), the outputs it needs from teacher and student, and its loss terms.

A method declares which named outputs it needs from the teacher and the student, may build its own learnable
modules once the output shapes are known (:meth:`Method.bind`), and turns those outputs into a dict of named,
already-weighted loss terms. The trainer sums the terms and logs each one, so a new method adds a class here,
not trainer code. Methods register in :data:`raykd.registry.METHODS` under their task; a user's own method is a
:class:`Method` subclass named by import path (``"mypkg.losses:MyKD"``).

Output names (:func:`raykd.models.features.capture`): ``"logits"`` for a classifier's output, ``"image"`` for a
super-resolution network's, ``"penultimate"`` for the classifier head's input, ``"stage:<k>"`` for stage ``k``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from raykd.registry import METHODS

__all__ = ["Method", "Outputs", "Shapes", "Param", "Float", "Int", "Choice", "create_method", "method_class"]

Outputs = dict[str, Tensor]
"""Named model outputs (or loss terms), batch-first tensors."""
Shapes = dict[str, tuple[int, ...]]
"""Named per-sample output shapes (no batch dimension)."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default, its valid values and, when a sweep searches it, its search space.

    ``kind`` is ``"float"``, ``"int"`` or ``"choice"``. Numbers must be finite and within ``[low, high]``
    (``low`` excluded when ``low_open``); a choice one of ``choices``. A sweep searches a number over ``search =
    (low, high)`` (log-uniform when ``log``) or over the values of ``grid``, and a choice over the values of
    ``search``; with neither it keeps the default.
    """

    default: Any
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] = ()
    search: tuple[Any, ...] | None = None
    log: bool = False
    grid: tuple[Any, ...] | None = None

    def check(self, owner: str, name: str, value: Any) -> Any:
        """``value`` in its canonical type, or ValueError naming the method, the parameter and the valid values."""
        given = value  # named as given (not as converted) in the error

        def bad(expected: str) -> ValueError:
            return ValueError(f"method {owner!r}: {name}={given!r} is invalid; expected {expected}")

        if self.kind == "choice":
            if value not in self.choices:
                raise bad(f"one of {list(self.choices)}")
            return value
        integral = self.kind == "int"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad("an integer" if integral else "a number")
        # finiteness first: int(nan) and int(inf) would raise their own errors, not naming the parameter
        if not math.isfinite(value):
            raise bad("a finite number")
        if integral and value != int(value):
            raise bad("an integer")
        value = int(value) if integral else float(value)
        if (self.low is not None and (value < self.low or (self.low_open and value == self.low))) or \
                (self.high is not None and value > self.high):
            raise bad(self.describe_range())
        return value

    def describe_range(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        return ("an integer " if self.kind == "int" else "a number ") + " and ".join(p for p in (low, high) if p)

    @property
    def searched(self) -> bool:
        return self.search is not None or self.grid is not None

    @property
    def categorical(self) -> tuple[Any, ...] | None:
        """The values a sweep tries when it searches a finite set (a choice, or a number's ``grid``)."""
        return self.grid if self.grid is not None else self.search if self.kind == "choice" else None

    def suggest(self, trial: Any, name: str) -> Any:
        """Optuna define-by-run: sample this parameter under ``name``."""
        if self.categorical is not None:
            return trial.suggest_categorical(name, list(self.categorical))
        low, high = self.search
        if self.kind == "int":
            return trial.suggest_int(name, int(low), int(high), log=self.log)
        return trial.suggest_float(name, float(low), float(high), log=self.log)


def Float(default: float, low: float | None = 0.0, high: float | None = None, *, low_open: bool = False,
          search: tuple[float, float] | None = None, log: bool = False, grid: tuple[float, ...] | None = None
          ) -> Param:
    """A real hyperparameter, by default >= 0 (loss weights)."""
    return Param(float(default), "float", low, high, low_open, (), search, log, grid)


def Int(default: int, low: int | None = 0, high: int | None = None, *, search: tuple[int, int] | None = None,
        log: bool = False, grid: tuple[int, ...] | None = None) -> Param:
    return Param(int(default), "int", low, high, False, (), search, log, grid)


def Choice(default: Any, choices: tuple[Any, ...], *, search: tuple[Any, ...] | None = None) -> Param:
    return Param(default, "choice", choices=tuple(choices), search=tuple(search) if search else None)


class Method(nn.Module):
    """Base class of every distillation method (and of the ``none`` baselines).

    Class attributes:
        name: registry key within ``task`` (``"cls"`` or ``"sr"``).
        student_input: which input the student sees, ``"hr"`` or ``"lr"``.
        hparams: every hyperparameter as a :class:`Param` (default, valid values, search space). Constructor
            keys outside it are rejected; values are checked (type, finiteness, range) before any training.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "cls"
    student_input: ClassVar[str] = "hr"
    hparams: ClassVar[dict[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__()
        unknown = sorted(set(params) - set(self.hparams))
        if unknown:
            allowed = sorted(self.hparams) or "none (this method takes no parameters)"
            raise ValueError(f"method {self.name!r}: unknown parameter(s) {unknown}; allowed: {allowed}")
        values = {**self.defaults(), **params}
        self.params: dict[str, Any] = {k: self.hparams[k].check(self.name, k, v) for k, v in values.items()}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyperparameter's default (where each comes from: the class docstring)."""
        return {name: p.default for name, p in cls.hparams.items()}

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The hyperparameters a sweep searches (the others stay at their defaults)."""
        return {name: p for name, p in cls.hparams.items() if p.searched}

    def teacher_outputs(self) -> tuple[str, ...]:
        """Named outputs the teacher must provide; ``()`` when the method needs no teacher."""
        return ()

    def student_outputs(self) -> tuple[str, ...]:
        """Named outputs the student's forward must capture besides its own output."""
        return ()

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        """Called once with per-sample output shapes (no batch dimension) from a probe forward.

        Methods with learnable parts (FitNet's regressor) create them here; the trainer moves the method to its
        device afterwards and optimises ``method.parameters()`` with the student.
        """

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        """Named loss terms, already weighted; the trainer sums them and logs each. ``epoch`` is 1-based
        (mdistiller's convention), for schedules such as DKD's warm-up."""
        raise NotImplementedError(f"method {self.name!r} does not implement forward()")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


def require_outputs(method: str, key: str, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
    for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
        if key not in shapes:
            raise ValueError(f"method {method!r}: the {side} provided no {key!r} output (got {sorted(shapes)})")


def require_same_shape(method: str, key: str, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
    require_outputs(method, key, student_shapes, teacher_shapes)
    if tuple(student_shapes[key]) != tuple(teacher_shapes[key]):
        raise ValueError(f"method {method!r}: student and teacher {key!r} shapes must match, got "
                         f"{tuple(student_shapes[key])} and {tuple(teacher_shapes[key])}")


def method_class(name: str, task: str = "cls") -> type[Method]:
    """The :class:`Method` subclass registered as ``name`` for ``task``, or named by import path."""
    cls = METHODS.get(name, scope=task)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r} is {cls!r}, not a raykd.methods.Method subclass")
    if cls.task != task:
        hint = " (an SR method subclasses raykd.methods.SRMethod: task 'sr', the student sees the LR image)" \
            if task == "sr" else ""
        raise ValueError(f"method {name!r} is a {cls.task} method; this run's data is {task}{hint}")
    return cls


def create_method(name: str, task: str = "cls", params: Mapping[str, Any] | None = None) -> Method:
    """The method ``name`` of ``task`` with ``params`` overriding its defaults (checked)."""
    return method_class(name, task)(**dict(params or {}))
