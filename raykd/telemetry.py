"""raykd's own series in the Ray dashboard, exported through ``ray.util.metrics``.

On Ray's Prometheus endpoint they appear prefixed ``ray_`` (counters also suffixed ``_total``), about ten
seconds after they are set:

- ``ray_raykd_teacher_samples_computed_total{teacher}``: (sample, view) pairs a teacher actually ran on;
- ``ray_raykd_cache_hits_total{teacher}``: (sample, view) teacher outputs served from the cache instead;
- ``ray_raykd_cache_bytes{teacher}``: size of that teacher's cached outputs;
- ``ray_raykd_student_samples_per_second{trial}``: training throughput of each trial;
- ``ray_raykd_best_metric{metric}``: the best value of the sweep's metric so far.

Ray exports a process's metrics only while that process lives, and not from the driver; trials end and the
sweep's bookkeeping runs in the driver. So every update goes, fire-and-forget, to one small named actor that
owns the series for the whole session.
"""
from __future__ import annotations

from functools import cache

import ray

_SERIES = {
    "raykd_teacher_samples_computed": ("Counter", "teacher forwards, (sample, view) pairs", "teacher"),
    "raykd_cache_hits": ("Counter", "teacher outputs served from the cache, (sample, view) pairs", "teacher"),
    "raykd_cache_bytes": ("Gauge", "bytes of cached teacher outputs", "teacher"),
    "raykd_student_samples_per_second": ("Gauge", "student training samples per second", "trial"),
    "raykd_best_metric": ("Gauge", "best value of the sweep metric so far", "metric"),
}


@ray.remote(num_cpus=0)
class _Exporter:
    def __init__(self):
        from ray.util import metrics

        self.series = {name: getattr(metrics, kind)(name, description=description, tag_keys=(tag,))
                       for name, (kind, description, tag) in _SERIES.items()}

    def update(self, name: str, value: float, tag: str) -> None:
        series = self.series[name]
        tags = {_SERIES[name][2]: tag}
        if _SERIES[name][0] == "Counter":
            series.inc(value, tags=tags)
        else:
            series.set(value, tags=tags)


@cache
def _exporter(cluster: str, job_id: str):
    """The session's exporter. Cached per cluster and job: a new local Ray (tests start several) reuses job ids,
    and a handle into a cluster that has shut down must not be reused."""
    return _Exporter.options(name=f"raykd-telemetry-{job_id}", get_if_exists=True).remote()


def _current():
    context = ray.get_runtime_context()
    return _exporter(context.gcs_address, context.get_job_id())


def start() -> None:
    """Create the exporter from this (long-lived, driver) process: an actor lives as long as its creator, so it
    must not be created first by a trial or a teacher actor that ends before the sweep does."""
    if ray.is_initialized():
        _current()


def _update(name: str, value: float, tag: str) -> None:
    if ray.is_initialized():
        _current().update.remote(name, value, tag)


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


def best_metric(metric: str, value: float) -> None:
    _update("raykd_best_metric", value, metric)
