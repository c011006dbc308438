"""raykd's own series in the Ray dashboard, exported through ``ray.util.metrics``.

On Ray's Prometheus endpoint they appear prefixed ``ray_`` (counters also suffixed ``_total``), about ten
seconds after they are set (Ray's ``metrics_report_interval_ms``; ``RAY_metrics_report_interval_ms=1000`` in the
environment of ``ray start`` or the driver makes it one):

- ``ray_raykd_teacher_samples_computed_total{teacher}``: (sample, view) pairs a teacher actually ran on;
- ``ray_raykd_cache_hits_total{teacher}``: (sample, view) teacher outputs served from the cache instead;
- ``ray_raykd_cache_bytes{teacher}``: size of that teacher's cached outputs;
- ``ray_raykd_student_samples_per_second{trial}``: training throughput of each trial;
- ``ray_raykd_best_metric{metric,method}``: the best value of the sweep's metric any trial of that method has
  reached so far (the better of every epoch reported, search and seeds stages alike).

Ray exports a process's metrics only while that process lives, and not from the driver; trials end and the
sweep's bookkeeping runs in the driver. So every update goes, fire-and-forget, to one small named actor that
owns the series for the whole session.
"""
from __future__ import annotations

import math
import threading
import time
from functools import cache

import ray

_SERIES = {
    "raykd_teacher_samples_computed": ("Counter", "teacher forwards, (sample, view) pairs", ("teacher",)),
    "raykd_cache_hits": ("Counter", "teacher outputs served from the cache, (sample, view) pairs", ("teacher",)),
    "raykd_cache_bytes": ("Gauge", "bytes of cached teacher outputs", ("teacher",)),
    "raykd_student_samples_per_second": ("Gauge", "student training samples per second", ("trial",)),
    "raykd_best_metric": ("Gauge", "best value of the sweep metric so far, per method", ("metric", "method")),
}
_BETTER = {"max": max, "min": min}


REPUBLISH_S = 5.0  # Ray stops exporting a gauge some seconds after its last set: the exporter sets them again


@ray.remote(num_cpus=0)
class _Exporter:
    def __init__(self):
        from ray.util import metrics

        self.series = {name: getattr(metrics, kind)(name, description=description, tag_keys=tag_keys)
                       for name, (kind, description, tag_keys) in _SERIES.items()}
        self.gauges: dict[tuple[str, tuple[str, ...]], float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._republish, daemon=True).start()

    def update(self, name: str, value: float, tags: tuple[str, ...], keep: str | None = None) -> None:
        """Add ``value`` to a counter, or set a gauge to it; with ``keep`` ("max" or "min") a gauge keeps the
        better of its value and ``value``, so every result may be sent without the sender knowing the best."""
        series = self.series[name]
        if _SERIES[name][0] == "Counter":
            series.inc(value, tags=dict(zip(_SERIES[name][2], tags)))
            return
        with self.lock:  # held while setting, so that a republish never sets a value this update replaced
            current = self.gauges.get((name, tags))
            if keep is not None and current is not None:
                value = _BETTER[keep](current, value)
            self.gauges[name, tags] = value
            series.set(value, tags=dict(zip(_SERIES[name][2], tags)))

    def _republish(self) -> None:
        """A gauge shows its last value for as long as the sweep runs (and its first value, set before Ray's
        exporter was ready, is not lost)."""
        while True:
            time.sleep(REPUBLISH_S)
            with self.lock:
                for (name, tags), value in self.gauges.items():
                    self.series[name].set(value, tags=dict(zip(_SERIES[name][2], tags)))


_STARTED: dict[str, object] = {}


def _name() -> str:
    return f"raykd-telemetry-{ray.get_runtime_context().get_job_id()}"


@cache
def _exporter(cluster: str, name: str):
    """The session's exporter, looked up by name (``None`` until the driver has started one). Cached per cluster: a
    new local Ray (tests start several) reuses job ids, and a handle into a cluster that has shut down must not be
    reused."""
    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def start() -> None:
    """Create the exporter from this (long-lived, driver) process: an actor lives as long as its creator, so it is
    never created by a trial or a teacher actor, which end before the sweep does (their updates are dropped until
    the driver has started it)."""
    cluster = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    if cluster is not None and cluster not in _STARTED:
        # the creating handle is held here for the session: when it goes out of scope the actor is killed, even
        # while handles looked up by name still exist
        _STARTED[cluster] = _Exporter.options(name=_name(), get_if_exists=True).remote()
        _exporter.cache_clear()


def _update(name: str, value: float, *tags: str, keep: str | None = None) -> None:
    if ray.is_initialized():
        exporter = _exporter(ray.get_runtime_context().gcs_address, _name())
        if exporter is None:
            _exporter.cache_clear()  # look again next time
        else:
            exporter.update.remote(name, value, tags, keep)


def teacher_samples_computed(teacher: str, n: int) -> None:
    if n:
        _update("raykd_teacher_samples_computed", n, teacher)


def cache_hits(teacher: str, n: int) -> None:
    if n:
        _update("raykd_cache_hits", n, teacher)


def cache_bytes(teacher: str, nbytes: int) -> None:
    _update("raykd_cache_bytes", nbytes, teacher)


def student_throughput(trial: str, samples_per_s: float) -> None:
    _update("raykd_student_samples_per_second", samples_per_s, trial)


def best_metric(metric: str, method: str, value: float, mode: str) -> None:
    """A trial of ``method`` reached ``value`` of ``metric`` (``mode``: "max" or "min", which is better): the
    series moves only when it is the method's best so far. A NaN (a diverged trial) is no best."""
    if not math.isnan(value):
        _update("raykd_best_metric", value, metric, method, keep=mode)
