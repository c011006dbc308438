"""A sweep's MLflow tracking (``--log mlflow``): one MLflow run per trial, named and tagged by what it is, with the
same parameter names in both stages.

Each run is called ``<stage>-<method>-<trial id>`` and tagged ``raykd.sweep``, ``raykd.stage`` ("search" or
"seeds"), ``raykd.method``, ``raykd.seed`` and ``raykd.trial``. Its parameters are the method (``method``), every
hyperparameter of it, defaults included (``<method>.<name>``), and the trials' shared settings (``model``,
``optim.lr``, ``optim.epochs``, ``optim.batch_size``, ``seed``). Its metrics are what raykd reports per epoch
(step = epoch), never Tune's bookkeeping (``done``, ``pid``, ``config/...``, times). Artifacts go beside the
results (``<results>/mlflow-artifacts``), and :func:`log_best_student` adds the sweep's best student to its run
as the ``student`` artifact. A resumed sweep finds a trial's run by its tag rather than opening a second one.

Ray Tune's own ``MLflowLoggerCallback`` is not used: it names parameters by the shape of each stage's config
(``figkd/w_hf`` in the search, ``run/figkd/w_hf`` in the seeds stage), logs only searched values and logs Tune's
internals as metrics.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from raykd.config import is_uri
from raykd.methods import method_class
from raykd.tune.spaces import trial_config, trial_method

__all__ = ["MLflowTracking", "tracking_uri", "log_best_student"]

_TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | frozenset(DEBUG_METRICS) | {"done", "should_checkpoint"}


def tracking_uri(directory: str) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store ``<results>/mlflow.db`` (``./mlflow.db`` when the results are
    on a URI)."""
    local = Path("mlflow.db") if is_uri(directory) else Path(directory) / "mlflow.db"
    local.parent.mkdir(parents=True, exist_ok=True)
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{local.resolve()}"


def _experiment(client: Any, name: str, directory: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None if is_uri(directory) else (Path(directory) / "mlflow-artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def _run_of(client: Any, experiment: str, trial_id: str) -> str | None:
    runs = client.search_runs([experiment], filter_string=f"tags.`raykd.trial` = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


class MLflowTracking(Callback):
    """Tune callback of one stage (``stage``) of the sweep ``sweep`` (results in ``directory``); ``base``: the trials'
    :class:`~raykd.config.TrainConfig` as JSON; ``fixed``: ``{method: params}`` the sweep holds for that method."""

    def __init__(self, sweep: str, directory: str, stage: str, task: str, base: dict[str, Any],
                 fixed: dict[str, dict[str, Any]]) -> None:
        self.sweep, self.directory, self.stage, self.task = sweep, directory, stage, task
        self.base, self.fixed = base, fixed
        self.runs: dict[str, str] = {}
        self._client: Any = None
        self._experiment: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment state
        return {**self.__dict__, "_client": None, "runs": {}}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri(self.directory))
            self._experiment = _experiment(self._client, self.sweep, self.directory)
        return self._client

    def _run(self, trial: Any) -> str:
        from mlflow.entities import Param

        if trial.trial_id not in self.runs:
            client = self.client
            run_id = _run_of(client, self._experiment, trial.trial_id)
            if run_id is None:
                config = trial_config(trial.config)
                method, searched = trial_method(config)
                seed = int(config.get("seed", self.base.get("seed", 0)))
                tags = {"raykd.sweep": self.sweep, "raykd.stage": self.stage, "raykd.method": method,
                        "raykd.seed": str(seed), "raykd.trial": trial.trial_id}
                run_id = client.create_run(self._experiment, run_name=f"{self.stage}-{method}-{trial.trial_id}",
                                           tags=tags).info.run_id
                hparams = {**method_class(method, self.task).defaults(), **searched, **self.fixed.get(method, {})}
                optim = self.base.get("optim", {})
                params = {"method": method, **{f"{method}.{k}": v for k, v in hparams.items()},
                          "model": self.base.get("model", {}).get("name"), "optim.lr": optim.get("lr"),
                          "optim.epochs": optim.get("epochs"), "optim.batch_size": optim.get("batch_size"),
                          "seed": seed}
                client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
            self.runs[trial.trial_id] = run_id
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        step = int(result.get("epoch", result.get("training_iteration", 0)))
        stamp = int(float(result.get("timestamp", 0)) * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in result.items()
                   if key not in _TUNE_KEYS and not key.startswith(("config", "time_"))
                   and isinstance(value, numbers.Real) and not isinstance(value, bool)]
        self.client.log_batch(self._run(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.client.set_terminated(self._run(trial), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.client.set_terminated(self._run(trial), "FAILED")


def log_best_student(sweep: str, directory: str, best: dict[str, Any]) -> None:
    """Add the best student's checkpoint (``summary.json``'s ``best``) to its trial's run as the ``student``
    artifact, and tag the run ``raykd.best_student``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(directory))
    run_id = _run_of(client, _experiment(client, sweep, directory), str(best["trial"]))
    if run_id is None or not best.get("checkpoint") or not Path(best["checkpoint"]).is_dir():
        return
    client.log_artifacts(run_id, best["checkpoint"], "student")
    client.set_tag(run_id, "raykd.best_student", "true")
