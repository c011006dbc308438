"""raykd's own lines for a running sweep stage, in place of Ray Tune's boxed status tables.

A stage prints a header, one line when a trial starts (its number, method and hyperparameters), one when it ends
(its best metric and length, or that ASHA stopped it early, or its error), and every :data:`EVERY_S` seconds a
stage line: trials done, running and pending, the best so far per method and an ETA. Each trial's per-epoch
metric is a ``--verbose`` (debug) line. The callback runs in the driver, which sees every trial's results as they
come: each one also goes to ``ray_raykd_best_metric`` (:mod:`raykd.telemetry`), so the dashboard's best per method
moves while the sweep runs.
"""
from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from raykd import telemetry
from raykd.console import log
from raykd.tune.spaces import trial_config, trial_method

__all__ = ["StageProgress", "EVERY_S"]

EVERY_S = 30.0


def _method(trial: Any) -> tuple[str, dict[str, Any]]:
    return trial_method(trial_config(trial.config))


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class StageProgress(Callback):
    """Progress of one stage (``stage``: "search" or "seeds") of ``total`` trials on ``metric``; ``epochs``: a
    trial's full length."""

    def __init__(self, stage: str, total: int, metric: str, mode: str, epochs: int) -> None:
        self.stage, self.total, self.metric, self.mode, self.epochs = stage, total, metric, mode, epochs
        self.number: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.started = time.monotonic()
        self.last_line = self.started
        log.info(f"== {stage} stage: {total} trials of {epochs} epochs ==")

    def _label(self, trial: Any) -> str:
        method, _ = _method(trial)
        return f"[{self.stage} {self.number.setdefault(trial.trial_id, len(self.number) + 1)}/{self.total}] {method}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _, params = _method(trial)
        log.info(f"{self._label(trial)} started{f' ({_params(params)})' if params else ''}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.metric in result:
            method, _ = _method(trial)
            best = result.get(f"best_{self.metric}", result[self.metric])
            telemetry.best_metric(self.metric, method, best, self.mode)
            log.debug(f"{self._label(trial)} epoch {result.get('epoch')}/{self.epochs} {self.metric} "
                      f"{result[self.metric]:.2f}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        best, epochs = result.get(f"best_{self.metric}"), int(result.get("epoch", 0))
        if best is None:
            log.info(f"{self._label(trial)} ended without a result")
            return
        method, _ = _method(trial)
        better = max if self.mode == "max" else min
        self.best[method] = better(self.best.get(method, best), best)
        stopped = f", stopped early by ASHA at epoch {epochs}" if epochs < self.epochs else ""
        log.info(f"{self._label(trial)} done: best {self.metric} {best:.2f}{stopped}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning(f"{self._label(trial)} failed: see {trial.local_path}/error.txt (Tune retries it from its "
                    "checkpoint while retries are left)")

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last_line < EVERY_S:
            return
        self.last_line = now
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        pending = self.total - done - running
        best = ", ".join(f"{m} {v:.2f}" for m, v in sorted(self.best.items(), key=lambda kv: kv[1],
                                                           reverse=self.mode == "max"))
        eta = f"; about {(now - self.started) / done * (self.total - done) / 60:.1f} min left" if done else ""
        log.info(f"[{self.stage}] {done}/{self.total} done, {running} running, {pending} pending"
                 f"{f'; best {self.metric} so far: {best}' if best else ''}{eta}")
