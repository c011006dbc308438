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

import threading
import time
from functools import cache

import ray

_SERIES = {
    "raykd_teacher_samples_computed": ("Counter", "teacher forwards, (sample, view) pairs", "teacher"),
    "raykd_cache_hits": ("Counter", "teacher outputs served from the cache, (sample, view) pairs", "teacher"),
    "raykd_cache_bytes": ("Gauge", "bytes of cached teacher outputs", "teacher"),
    "raykd_student_samples_per_second": ("Gauge", "student training samples per second", "trial"),
    "raykd_best_metric": ("Gauge", "best value of the sweep metric so far", "metric"),
}


REPUBLISH_S = 5.0  # Ray stops exporting a gauge some seconds after its last set: the exporter sets them again


@ray.remote(num_cpus=0)
class _Exporter:
    def __init__(self):
        from ray.util import metrics

        self.series = {name: getattr(metrics, kind)(name, description=description, tag_keys=(tag,))
                       for name, (kind, description, tag) in _SERIES.items()}
        self.gauges: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._republish, daemon=True).start()

    def update(self, name: str, value: float, tag: str) -> None:
        series = self.series[name]
        tags = {_SERIES[name][2]: tag}
        if _SERIES[name][0] == "Counter":
            series.inc(value, tags=tags)
        else:
            with self.lock:
                self.gauges[name, tag] = value
            series.set(value, tags=tags)

    def _republish(self) -> None:
        """A gauge shows its last value for as long as the sweep runs (and its first value, set before Ray's
        exporter was ready, is not lost)."""
        while True:
            time.sleep(REPUBLISH_S)
            with self.lock:
                current = dict(self.gauges)
            for (name, tag), value in current.items():
                self.series[name].set(value, tags={_SERIES[name][2]: tag})


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


def _update(name: str, value: float, tag: str) -> None:
    if ray.is_initialized():
        exporter = _exporter(ray.get_runtime_context().gcs_address, _name())
        if exporter is None:
            _exporter.cache_clear()  # look again next time
        else:
            exporter.update.remote(name, value, tag)


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
