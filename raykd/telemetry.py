"""raykd's own series in the Ray dashboard, exported through ``ray.util.metrics``.

On Ray's Prometheus endpoint they appear prefixed ``ray_`` (counters also suffixed ``_total``), about ten
seconds after they are set:

- ``ray_raykd_teacher_samples_computed_total{teacher}``: (sample, view) pairs a teacher actually ran on;
- ``ray_raykd_cache_hits_total{teacher}``: (sample, view) teacher outputs served from the cache instead;
- ``ray_raykd_cache_bytes{teacher}``: size of that teacher's cached outputs;
- ``ray_raykd_student_samples_per_second{trial}``: training throughput of each trial;
- ``ray_raykd_best_metric{metric}``: the best value of the sweep's metric so far.

Metric objects must be created in a process connected to Ray, so each is made on first use in that process.
"""
from __future__ import annotations

from functools import cache


@cache
def _metric(kind: str, name: str, description: str, tag: str):
    from ray.util import metrics

    return getattr(metrics, kind)(name, description=description, tag_keys=(tag,))


def teacher_samples_computed(teacher: str, n: int) -> None:
    if n:
        _metric("Counter", "raykd_teacher_samples_computed", "teacher forwards, (sample, view) pairs",
                "teacher").inc(n, tags={"teacher": teacher})


def cache_hits(teacher: str, n: int) -> None:
    if n:
        _metric("Counter", "raykd_cache_hits", "teacher outputs served from the cache, (sample, view) pairs",
                "teacher").inc(n, tags={"teacher": teacher})


def cache_bytes(teacher: str, nbytes: int) -> None:
    _metric("Gauge", "raykd_cache_bytes", "bytes of cached teacher outputs", "teacher").set(
        nbytes, tags={"teacher": teacher})


def student_throughput(trial: str, samples_per_s: float) -> None:
    _metric("Gauge", "raykd_student_samples_per_second", "student training samples per second", "trial").set(
        samples_per_s, tags={"trial": trial})


def best_metric(metric: str, value: float) -> None:
    _metric("Gauge", "raykd_best_metric", "best value of the sweep metric so far", "metric").set(
        value, tags={"metric": metric})
