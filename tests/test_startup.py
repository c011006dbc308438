"""Start-up (issue 17): ``--help`` without the heavy libraries (torch, Ray, timm are imported when a command runs,
not to print its flags), and a local Ray start that fails is retried once after what it left running is stopped,
and otherwise is one message that says what failed and what to try."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
import ray

from raykd.console import run_command
from raykd.tune.resources import LOCAL_START_CONFIG
from raykd.tune.spec import connect

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_startup", REPO / "bench" / "startup.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TIMED_OUT = ("The current node timed out during startup. This could happen because some of the raylet failed to "
             "startup or the GCS has become overloaded.")  # Ray 2.60's words when the raylet gave up on its agent


def test_raykd_help_imports_no_heavy_library() -> None:
    assert bench.heavy_imports(bench.COMMANDS["raykd --help"]) == []


@pytest.mark.parametrize("command", ["raykd sweep figkd_tinyimagenet --help",
                                     "python sweeps/figkd_tinyimagenet.py --help"])
def test_a_sweeps_help_imports_no_heavy_library(command) -> None:
    assert bench.heavy_imports(bench.COMMANDS[command]) == []


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def fake_ray(monkeypatch):
    """``ray.init`` replaced by the test's own (no Ray starts); every call's keyword arguments recorded."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    calls: list[dict] = []
    processes: list[subprocess.Popen] = []

    def install(*outcomes):
        """Each call of ``ray.init`` takes the next outcome: an exception is raised after starting a process (as a
        failed start leaves its GCS running), anything else is returned as the context."""
        queue = list(outcomes)

        def init(**kwargs):
            calls.append(kwargs)
            outcome = queue.pop(0)
            if isinstance(outcome, BaseException):
                processes.append(_sleeper())
                raise outcome
            return outcome

        monkeypatch.setattr(ray, "init", init)

    yield install, calls, processes
    for process in processes:
        process.kill()
        process.wait()


def test_a_failed_local_start_is_retried_once_after_what_it_left_is_stopped(fake_ray, capsys) -> None:
    install, calls, left = fake_ray
    install(Exception(TIMED_OUT), types.SimpleNamespace(dashboard_url=None))
    ours = _sleeper()  # this process's own child, there before Ray: not Ray's to stop
    try:
        assert run_command(lambda: connect(None) or 0, []) == 0
        assert len(calls) == 2
        assert left[0].wait(timeout=30) == -9  # the failed start's process, killed before the retry
        assert ours.poll() is None
    finally:
        ours.kill()
        ours.wait()
    assert all(c["address"] == "local" and c["_system_config"] == LOCAL_START_CONFIG for c in calls)
    said = capsys.readouterr().out  # progress, on stdout: stderr stays for errors
    assert "a local Ray did not start (The current node timed out during startup." in said and "once more" in said


def test_two_failed_starts_are_one_message_saying_what_failed_and_what_to_try(fake_ray, capsys) -> None:
    install, calls, _ = fake_ray
    install(Exception(TIMED_OUT), RuntimeError("Failed to bind the GCS port 6379"))
    assert run_command(lambda: connect(None) or 0, []) == 1
    assert len(calls) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("raykd: error: a local Ray did not start or answer: Failed to bind the GCS port 6379 "
                           "(Ray's logs: /tmp/ray/session_latest/logs) (twice; the first time: The current node "
                           "timed out during startup.")
    assert "rerun when the load is lower" in line and "--address auto" in line


def test_a_cluster_that_does_not_answer_is_not_started_again(fake_ray, capsys) -> None:
    install, calls, _ = fake_ray
    install(ConnectionError("Could not find any running Ray instance"))
    assert run_command(lambda: connect("10.0.0.1:6379") or 0, []) == 1
    assert len(calls) == 1 and "_system_config" not in calls[0]  # a running cluster keeps its own settings
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("raykd: error: Ray at 10.0.0.1:6379 did not start or answer: Could not find any") and \
        "ray status" in line
