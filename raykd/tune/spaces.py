"""The define-by-run search space: the method is a categorical choice, each method's knobs are conditional on it.

Optuna sees parameters namespaced by method (``"figkd/T"``), so ``T`` of KD and ``T`` of FiGKD are separate
distributions; Ray unflattens the ``/`` and a trial receives ``{"method": "figkd", "figkd": {"T": ...}}``.
The papers' defaults are evaluated first (``points_to_evaluate``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from raykd.methods import method_defaults


@dataclass(frozen=True)
class Knob:
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high


# What a sweep searches per task and method: every other hyperparameter stays at the method's default.
SPACES: dict[str, dict[str, dict[str, Knob]]] = {"cls": {
    "none": {},
    "kd": {"w_kd": Knob("float", 0.1, 1.0), "T": Knob("float", 1.0, 8.0)},
    "dkd": {"alpha": Knob("float", 0.25, 4.0, log=True), "beta": Knob("float", 1.0, 16.0, log=True),
            "T": Knob("float", 1.0, 8.0)},
    "figkd": {"w_ce": Knob("float", 0.1, 1.0), "w_hf": Knob("float", 0.1, 10.0, log=True),
              "T": Knob("float", 1.0, 8.0), "level": Knob("choice", choices=(1, 2)),
              "wavelet": Knob("choice", choices=("haar", "db2")), "distance": Knob("choice", choices=("mse", "l1"))},
    "dfd": {"lambda": Knob("float", 0.01, 10.0, log=True)},
    "vimd": {"alpha": Knob("float", 0.1, 4.0, log=True), "beta": Knob("float", 1.0, 100.0, log=True),
             "T": Knob("float", 1.0, 8.0)},
}, "sr": {
    "none": {},
    "l1kd": {"w_kd": Knob("float", 0.1, 10.0, log=True)},
    "mtkd": {"alpha": Knob("float", 0.01, 1.0, log=True), "levels": Knob("choice", choices=(1, 2, 3)),
             "wavelet": Knob("choice", choices=("haar", "db2"))},
    "dvmsr": {"w_gt": Knob("float", 0.1, 1.0), "w_kd": Knob("float", 0.1, 10.0, log=True),
              "position": Knob("choice", choices=("output", "feature"))},
}}


def check_methods(methods: Sequence[str], task: str = "cls") -> list[str]:
    known = SPACES.get(task, {})
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"cannot sweep {task} methods {list(methods)}: choose from {sorted(known)}")
    return list(methods)


class DefineByRun:
    """The Optuna define-by-run function for ``OptunaSearch(space=...)`` (a class, so Tune can pickle it)."""

    def __init__(self, methods: Sequence[str], task: str = "cls"):
        self.methods = check_methods(methods, task)
        self.task = task

    def __call__(self, trial) -> None:
        method = trial.suggest_categorical("method", self.methods)
        for name, knob in SPACES[self.task][method].items():
            knob.suggest(trial, f"{method}/{name}")


def default_points(methods: Sequence[str], task: str = "cls") -> list[dict[str, Any]]:
    """One point per method with the paper's defaults, in Optuna's flat ``method/param`` naming."""
    points = []
    for method in check_methods(methods, task):
        defaults = method_defaults(method, task)
        points.append({"method": method, **{f"{method}/{p}": defaults[p] for p in SPACES[task][method]}})
    return points


def trial_method(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, params)`` from a trial's config: the searched knobs; the rest stay at the defaults."""
    method = config["method"]
    return method, dict(config.get(method, {}))
