"""The define-by-run search space, derived from the methods' own declarations (:meth:`Method.search_space`).

The method is a categorical choice and each method's knobs are conditional on it. Optuna sees parameters
namespaced by method (``"figkd/w_hf"``), so ``T`` of KD and ``T`` of DKD are separate distributions; Ray unflattens
the ``/`` and a trial receives ``{"method": "figkd", "figkd": {"w_hf": ...}}``. The methods' defaults are evaluated
first (``points_to_evaluate``).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from raykd.methods import method_class

__all__ = ["DefineByRun", "check_methods", "default_points", "trial_config", "trial_method", "teacher_needs"]


def check_methods(methods: Sequence[str], task: str) -> list[str]:
    """The methods, each resolved for ``task`` (an unknown name is an error listing the registered ones)."""
    if not methods:
        raise ValueError("a sweep needs at least one method")
    for name in methods:
        method_class(name, task)
    return list(methods)


class DefineByRun:
    """The Optuna define-by-run function for ``OptunaSearch(space=...)`` (a class, so Tune can pickle it)."""

    def __init__(self, methods: Sequence[str], task: str):
        self.methods = check_methods(methods, task)
        self.task = task

    def __call__(self, trial: Any) -> None:
        method = trial.suggest_categorical("method", self.methods)
        for name, param in method_class(method, self.task).search_space().items():
            param.suggest(trial, f"{method}/{name}")


def default_points(methods: Sequence[str], task: str) -> list[dict[str, Any]]:
    """One point per method with its defaults, in Optuna's flat ``method/param`` naming."""
    points = []
    for method in check_methods(methods, task):
        cls = method_class(method, task)
        defaults = cls.defaults()
        points.append({"method": method, **{f"{method}/{p}": defaults[p] for p in cls.search_space()}})
    return points


def trial_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A trial's own config from what Tune holds: the seeds stage's grid nests it under ``"run"``."""
    config = dict(config or {})
    return dict(config.get("run", config))


def trial_method(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, params)`` from a trial's config: the searched knobs; the rest stay at the defaults."""
    method = config["method"]
    return method, dict(config.get(method, {}))


def teacher_needs(method: str, task: str, fixed: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Every teacher output ``method`` may ask for in a sweep: the union over its categorically searched knobs
    (DVMSR's ``position`` switches between the SR image and a feature; ViMD's terms), the rest at defaults.
    ``fixed``: knobs the sweep holds for every trial of the method (ViMD's ``terms`` of an ablation column), which
    are then not searched for outputs."""
    cls = method_class(method, task)
    fixed = dict(fixed or {})
    choices = {name: p.categorical for name, p in cls.search_space().items()
               if p.categorical is not None and name not in fixed}
    outputs = {o for combo in itertools.product(*choices.values())
               for o in cls(**fixed, **dict(zip(choices, combo))).teacher_outputs()}
    outputs |= set(cls(**fixed).teacher_outputs())
    return tuple(sorted(outputs))
