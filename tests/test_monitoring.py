"""raykd's series in a real Prometheus, live: ``raykd monitor`` scrapes a small sweep's Ray nodes through Ray's
service-discovery file, every panel of raykd's Grafana dashboard answers, and Ray's dashboard reaches that
Prometheus under token authentication.

The Ray session has a temp dir of its own (other Ray sessions on the machine, and their ``session_latest``, are
never seen) and exports every second instead of every ten; Prometheus scrapes every second.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray

from raykd import telemetry
from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig, override
from raykd.monitoring import DASHBOARD, prometheus_config
from raykd.teachers.spec import TeacherSpec
from raykd.train.loop import train
from raykd.train.tasks import build_task
from raykd.tune.sweep import decoded_splits, run_sweep

needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus binary on "
                                      "PATH (apt-get install -y prometheus; .ci/run installs it)")

# trials of several seconds (six epochs, none stopped early), so that "seen while a trial trains" has seconds of
# margin over the export (one second) and the scrape (one second)
BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=6, batch_size=64, steps_per_epoch=20))
SERIES = ["ray_raykd_teacher_samples_computed_total", "ray_raykd_cache_hits_total", "ray_raykd_cache_bytes",
          "ray_raykd_student_samples_per_second", "ray_raykd_best_metric"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)["data"]["result"]


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def _nonzero(values: dict[str, list[dict]]) -> set[str]:
    return {name for name, found in values.items() if any(float(r["value"][1]) > 0 for r in found)}


class FirstSeen(threading.Thread):
    """When (wall clock) Prometheus first answers ``expr`` with a non-zero sample, polled while the sweep runs."""

    def __init__(self, port: int, expr: str) -> None:
        super().__init__(daemon=True)
        self.port, self.expr, self.at, self.stop = port, expr, None, threading.Event()

    def run(self) -> None:
        while self.at is None and not self.stop.wait(0.5):
            try:
                if any(float(r["value"][1]) > 0 for r in _query(self.port, self.expr)):
                    self.at = time.time()
            except OSError:  # Prometheus still starting
                pass


@pytest.fixture
def ray_temp_dir():
    """Short (Ray's sockets live under it, and a Unix socket path has at most 107 bytes) and the session's own."""
    path = Path(tempfile.mkdtemp(prefix="rkdmon", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_dashboard_shows_every_raykd_series_and_only_those() -> None:
    """A series renamed in raykd/telemetry.py (or a typo in a panel) would leave a panel silently empty."""
    exported = {f"ray_{name}" + ("_total" if kind == "Counter" else "") for name, (kind, _, _) in
                telemetry._SERIES.items()}
    assert exported == set(SERIES)
    queried = {series for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]
               for series in re.findall(r"ray_raykd_\w+", target["expr"])}
    assert queried == exported


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool on PATH (Debian's prometheus package)")
def test_prometheus_accepts_the_generated_config(tmp_path) -> None:
    """Prometheus's own checker on what ``raykd monitor`` writes (JSON for YAML, a 1 s interval under the default
    10 s scrape timeout), where the binary is not there to start."""
    (tmp_path / "prometheus.yml").write_text(prometheus_config(tmp_path / "discovery.json", "1s"))
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
@needs_prometheus
def test_a_sweep_is_scraped_live_and_every_dashboard_panel_answers(ray_temp_dir, tmp_path, monkeypatch) -> None:
    """The monitor starts before Ray does (as in the README), so it also finds a session that appears later."""
    port = _free_port()
    monitor = subprocess.Popen(
        [sys.executable, "-m", "raykd.cli", "monitor", "--ray-temp-dir", str(ray_temp_dir), "--port", str(port),
         "--scrape-interval", "1s", "--data-dir", str(tmp_path / "prometheus")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # read by Ray's dashboard when it starts: its Metrics page and health check query this Prometheus
        monkeypatch.setenv("RAY_PROMETHEUS_HOST", f"http://127.0.0.1:{port}")
        context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=_free_port(),
                           log_to_driver=False, _temp_dir=str(ray_temp_dir),
                           _system_config={"metrics_report_interval_ms": 1000})
        try:
            session = (ray_temp_dir / "session_latest").resolve()
            splits = decoded_splits(BASE, str(tmp_path / "cache"))
            task = build_task(BASE.data, BASE.seed, {name: ray.get(ref) for name, ref in splits.items()})
            train(override(BASE, {"optim.epochs": 1}), task=task, checkpoint_dir=tmp_path / "teacher")
            teacher = TeacherSpec.from_checkpoint(tmp_path / "teacher")
            sweep = SweepConfig(name="monitored", methods=("none", "kd"), num_samples=3, seeds=0, verbose=0,
                                grace_period=BASE.optim.epochs, storage=str(tmp_path / "runs"),
                                cache_dir=str(tmp_path / "cache"))
            best_seen = FirstSeen(port, "ray_raykd_best_metric")
            best_seen.start()
            run_sweep(BASE, teacher, sweep, splits=splits)
            best_seen.stop.set()
            best_seen.join()
            table = pd.read_parquet(tmp_path / "runs" / "monitored" / "results.parquet")
            # Tune's result timestamps are whole seconds, rounded down: earlier than this is before the end
            last_result = max(json.loads(line)["timestamp"] for d in table["trial_dir"]
                              for line in (Path(d) / "result.json").read_text().splitlines())
            assert best_seen.at is not None and best_seen.at < last_result, \
                "ray_raykd_best_metric reached Prometheus only once every trial had ended, not while they trained"

            expected_best = table.groupby("method")["best_val_top1"].max().to_dict()
            deadline, values, best = time.monotonic() + 60, {}, {}
            while time.monotonic() < deadline:  # a scrape after the last update
                values = {name: _query(port, name) for name in SERIES}
                best = {r["metric"]["method"]: float(r["value"][1]) for r in values["ray_raykd_best_metric"]
                        if r["metric"]["metric"] == "val_top1"}
                if _nonzero(values) == set(SERIES) and best == pytest.approx(expected_best):
                    break
                time.sleep(1)
            missing = set(SERIES) - _nonzero(values)
            assert not missing, f"no non-zero sample in Prometheus for {sorted(missing)}"
            assert best == pytest.approx(expected_best), "ray_raykd_best_metric is not each method's best trial"
            assert {r["metric"]["SessionName"] for r in values["ray_raykd_best_metric"]} == {session.name}

            panels = json.loads(DASHBOARD.read_text())["panels"]
            for panel in panels:
                for target in panel["targets"]:
                    expr = target["expr"].replace("$SessionName", session.name).replace("$__rate_interval", "1m")
                    assert _query(port, expr), f"panel {panel['title']!r} shows nothing: {expr}"
            installed = session / "metrics" / "grafana" / "dashboards" / DASHBOARD.name
            assert installed.read_text() == DASHBOARD.read_text()

            # the README's way into the dashboard under token auth: the token `ray get-auth-token` prints
            token = subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token"],
                                   capture_output=True, text=True, check=True).stdout.strip()
            health = f"http://{context.dashboard_url}/api/prometheus_health"
            assert _status(health, {}) == 401
            assert _status(health, {"Authorization": f"Bearer {token}"}) == 200
        finally:
            ray.shutdown()
        monitor.send_signal(signal.SIGINT)  # Ctrl-C: the monitor stops its Prometheus and exits cleanly
        output, _ = monitor.communicate(timeout=60)
        assert monitor.returncode == 0, output
        assert f"prometheus: http://127.0.0.1:{port}" in output and "/d/raykd" in output, output
        with pytest.raises(OSError):
            _query(port, "up")
    finally:
        if monitor.poll() is None:
            os.killpg(monitor.pid, signal.SIGKILL)
