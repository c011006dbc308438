"""The define-by-run search space: the method is a categorical choice, each method's knobs are conditional on it.

Optuna sees parameters namespaced by method (``"figkd/T"``), so ``T`` of KD and ``T`` of FiGKD are separate
distributions; Ray unflattens the ``/`` and a trial receives ``{"method": "figkd", "figkd": {"T": ...}}``.
The papers' defaults are evaluated first (``points_to_evaluate``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


# What a sweep searches per method (issue #3): every other hyperparameter stays at the method's default.
SPACES: dict[str, dict[str, Knob]] = {
    "none": {},
    "kd": {"w_kd": Knob("float", 0.1, 1.0), "T": Knob("float", 1.0, 8.0)},
    "dkd": {"alpha": Knob("float", 0.25, 4.0, log=True), "beta": Knob("float", 1.0, 16.0, log=True),
            "T": Knob("float", 1.0, 8.0)},
    "figkd": {"w_ce": Knob("float", 0.1, 1.0), "w_hf": Knob("float", 0.1, 10.0, log=True),
              "T": Knob("float", 1.0, 8.0), "level": Knob("choice", choices=(1, 2)),
              "wavelet": Knob("choice", choices=("haar", "db2")), "distance": Knob("choice", choices=("mse", "l1"))},
    "dfd": {"lambda": Knob("float", 0.01, 10.0, log=True)},
}


def check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in SPACES]
    if unknown or not methods:
        raise ValueError(f"cannot sweep methods {list(methods)}: choose from {sorted(SPACES)}")
    return list(methods)


def define_by_run(methods: Sequence[str]) -> Callable[[Any], None]:
    """The Optuna define-by-run function for ``OptunaSearch(space=...)``."""
    methods = check_methods(methods)

    def space(trial) -> None:
        method = trial.suggest_categorical("method", methods)
        for name, knob in SPACES[method].items():
            knob.suggest(trial, f"{method}/{name}")

    return space


def default_points(methods: Sequence[str]) -> list[dict[str, Any]]:
    """One point per method with the paper's defaults, in Optuna's flat ``method/param`` naming."""
    points = []
    for method in check_methods(methods):
        defaults = method_defaults(method)
        points.append({"method": method, **{f"{method}/{p}": defaults[p] for p in SPACES[method]}})
    return points


def trial_method(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, params)`` from a trial's config: the searched knobs; the rest stay at the defaults."""
    method = config["method"]
    return method, dict(config.get(method, {}))
