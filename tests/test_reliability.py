"""Bad input and hostile files are refused before any work, in one line with exit 2, through every entry point."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch
import torch

from raykd import cli
from raykd.console import run_command
from raykd.models.checkpoint import MODEL_FILE, model_entry
from raykd.registry import UntrustedPlugin
from raykd.teachers.spec import TeacherSpec
from raykd.tune.lock import LOCK_FILE, SweepLocked, check_fresh_directory, sweep_lock

ROOT = Path(__file__).resolve().parents[1]


def hostile_checkpoint(directory: Path, marker: Path) -> Path:
    """A checkpoint directory whose meta.json asks for ``subprocess:run`` to create ``marker``."""
    directory.mkdir()
    safetensors.torch.save_file({"w": torch.zeros(1)}, str(directory / MODEL_FILE))
    meta = {"model": "subprocess:run", "model_kwargs": {"args": f"touch {marker}", "shell": True}, "files": {}}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def test_a_meta_json_naming_code_is_refused_and_never_runs(tmp_path, capsys) -> None:
    marker = tmp_path / "PWNED"
    teacher = hostile_checkpoint(tmp_path / "teacher", marker)
    for argv in (["distill", "--teacher", str(teacher), "--out", str(tmp_path / "out"), "--cache-dir",
                  str(tmp_path / "cache")],
                 ["eval-sr", "--model", str(teacher), "--set", str(tmp_path), "--scale", "4"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'subprocess:run', an import path" in err[0] and "--trust-plugins" in err[0], err
    with pytest.raises(UntrustedPlugin):
        TeacherSpec.from_checkpoint(teacher)
    assert not marker.exists()


def test_nested_and_loading_entries_of_a_meta_json_are_refused(tmp_path) -> None:
    nested = {"model": "mtkd_teacher", "model_kwargs": {"teachers": [{"model": "os:system", "model_kwargs": {}}]}}
    with pytest.raises(UntrustedPlugin, match="'os:system'"):
        model_entry(nested, tmp_path / "meta.json")
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\] would load weights from elsewhere"):
        model_entry({"model": "resnet18", "model_kwargs": {"checkpoint_path": "/tmp/x.pth"}}, "meta.json")
    with pytest.raises(ValueError, match="neither a raykd model"):
        model_entry({"model": "hf-hub:someone/model"}, "meta.json")
    assert model_entry({"model": "resnet8", "model_kwargs": {"num_classes": 3}}, "m") == ("resnet8", {"num_classes": 3})


def test_a_plugin_named_by_the_user_is_trusted(tmp_path, monkeypatch) -> None:
    (tmp_path / "trusted_nets.py").write_text("import torch.nn as nn\ndef net(n=2):\n    return nn.Linear(2, n)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    meta = {"model": "trusted_nets:net", "model_kwargs": {"n": 3}}
    with pytest.raises(UntrustedPlugin):
        model_entry(meta, "meta.json")
    assert run_command(lambda: model_entry(meta, "meta.json") and 0, ["--model", "other_nets:net"]) == 2
    # the command-line edge trusts a plugin path the user gives as a flag's value
    assert run_command(lambda: model_entry(meta, "meta.json") and 0, ["--model=trusted_nets:net"]) == 0
    assert model_entry(meta, "meta.json") == ("trusted_nets:net", {"n": 3})


def run_sweep_script(*flags: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAYKD_CACHE": str(cwd / "cache"), "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "figkd_tinyimagenet.py"), *flags], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags, message", [
    (["--methods", "nope"], "unknown cls method 'nope'"),
    (["--student-model", "no_such_net"], "unknown model 'no_such_net'"),
    (["--student-model", "no_such_module:net"], "cannot import module 'no_such_module'"),
    (["--epochs", "-1"], "epochs"),
    (["--image-size", "32"], "--image-size: --smoke runs on built-in data"),
])
def test_sweep_mistakes_are_one_line_before_ray_starts(tmp_path, flags, message) -> None:
    started = time.perf_counter()
    done = run_sweep_script("--smoke", "--storage", str(tmp_path / "runs"), *flags, cwd=tmp_path)
    elapsed = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Ray" not in done.stdout and not (tmp_path / "cache" / "datasets").exists(), done.stdout
    print(f"{flags}: refused in {elapsed:.1f} s")


def test_the_same_mistake_reads_the_same_through_both_entry_points(tmp_path) -> None:
    script = run_sweep_script("--smoke", "--methods", "pkg_that_is_not_there:Method", cwd=tmp_path)
    command = subprocess.run([sys.executable, "-m", "raykd.cli", "sweep", "figkd_tinyimagenet", "--smoke",
                              "--methods", "pkg_that_is_not_there:Method"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "RAYKD_CACHE": str(tmp_path / "cache")})
    assert script.returncode == command.returncode == 2
    assert script.stderr == command.stderr and len(script.stderr.strip().splitlines()) == 1, script.stderr
    assert "cannot import module 'pkg_that_is_not_there'" in script.stderr


def test_lr_zero_is_refused_not_replaced(tmp_path) -> None:
    from raykd.sweeps import run

    assert run("dfd_cifar", ["--smoke", "--lr", "0", "--storage", str(tmp_path / "runs")]) == 2


def test_one_sweep_per_name(tmp_path) -> None:
    directory = str(tmp_path / "runs" / "demo")
    with sweep_lock(directory):
        holder = json.loads((Path(directory) / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(SweepLocked, match=rf"in use by another sweep of the same name: .*PID {os.getpid()}"):
            with sweep_lock(directory):
                pass
    assert not Path(directory).exists()  # the lock made it, nothing was written in it: no trace left
    # a lock whose holder (a process of this host) is gone is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    Path(directory).mkdir()
    (Path(directory) / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    with sweep_lock(directory):
        assert json.loads((Path(directory) / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_directory_with_results_needs_resume_or_force(tmp_path) -> None:
    directory = tmp_path / "runs" / "demo"
    directory.mkdir(parents=True)
    (directory / "results.parquet").write_bytes(b"old results")
    with pytest.raises(ValueError, match="already holds a sweep's results: --resume continues it, --force"):
        check_fresh_directory([str(directory)], resume=False, force=False)
    check_fresh_directory([str(directory)], resume=True, force=False)
    check_fresh_directory([str(directory)], resume=False, force=True)
    (moved,) = tmp_path.joinpath("runs").glob("demo.replaced-*")
    assert (moved / "results.parquet").read_bytes() == b"old results" and not any(directory.iterdir())


def _stage(tmp_path, actions: list[str]):
    """A real Tune stage of one trial per action, run one at a time: "ok" reports, "fail" raises, "interrupt" sends
    Ctrl-C to the driver while it runs."""
    from ray import tune
    from ray.tune import RunConfig, TuneConfig, Tuner, grid_search

    def trial(config) -> None:  # (a closure: pickled by value, the workers cannot import this module)
        if config["action"] == "interrupt":
            os.kill(config["driver"], signal.SIGINT)
            time.sleep(60)
        if config["action"] == "fail":
            raise RuntimeError("out of memory in trial")
        tune.report({"score": 1.0})

    return Tuner(trial, tune_config=TuneConfig(max_concurrent_trials=1),
                 param_space={"action": grid_search(actions), "driver": os.getpid()},
                 run_config=RunConfig(name="stage", storage_path=str(tmp_path), verbose=0))


def test_a_stage_stopped_by_ctrl_c_or_failed_throughout_is_never_reported_finished(local_ray, tmp_path) -> None:
    from raykd.console import Interrupted, StageFailed
    from raykd.tune.report import rank_methods, summary_markdown
    from raykd.tune.sweep import fit_stage

    # Tune's own SIGINT handler makes fit() return as if the stage had finished
    _, problem = fit_stage(_stage(tmp_path / "a", ["ok", "interrupt", "ok"]), "seeds", 3, str(tmp_path / "a" / "stage"))
    assert isinstance(problem, Interrupted) and str(problem) == "the seeds stage stopped with 1 of 3 trials finished"
    searched = pd.DataFrame([{"trial": "t0", "stage": "search", "method": "none", "status": "ok", "best_acc": 50.0,
                              "epochs": 2}])
    line = summary_markdown(searched, "acc", "max", {
        "incomplete": str(problem), "ranking": rank_methods(searched, "acc", "max"), "trials": 1, "failed": 0,
        "wall_s": 1.0, "teacher_samples_computed": 0, "cache_hits": 0}, "cls").splitlines()[2]
    assert line.startswith("**Incomplete: the seeds stage stopped with 1 of 3 trials finished.**")
    assert run_command(lambda: (_ for _ in ()).throw(problem), [], "raykd") == 130

    _, problem = fit_stage(_stage(tmp_path / "b", ["fail", "fail"]), "search", 2, str(tmp_path / "b" / "stage"))
    assert isinstance(problem, StageFailed) and "every trial of the search stage failed (2)" in str(problem)
    assert "out of memory in trial" in str(problem)
    _, problem = fit_stage(_stage(tmp_path / "c", ["fail", "ok"]), "search", 2, str(tmp_path / "c" / "stage"))
    assert problem is None  # one failure among finished trials: a result, reported as failed in its row


def test_resume_refuses_a_damaged_tune_state(tmp_path) -> None:
    from raykd.config import SweepConfig
    from raykd.tune.sweep import check_sweep

    stage = tmp_path / "runs" / "demo"
    stage.mkdir(parents=True)
    (stage / "experiment_state-2026-12-01_10-00-00.json").write_text(json.dumps({"runner_data": {}, "trial_data": []}))
    (stage / "experiment_state-2026-12-01_11-00-00.json").write_text('{"runner_data": {"_inserted')  # disk filled
    sweep = SweepConfig(name="demo", methods=("kd",), storage=str(tmp_path / "runs"),
                        cache_dir=str(tmp_path / "cache"), resume=True)
    with pytest.raises(ValueError, match=r"--resume: .*experiment_state-2026-12-01_11-00-00.json is damaged .*"
                                         r"run without --resume and with --force"):
        check_sweep(sweep, "cls")
    (stage / "experiment_state-2026-12-01_11-00-00.json").unlink()
    check_sweep(sweep, "cls")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB file system (tmpfs), to fill; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN) to fill a disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_storage_that_fills_during_a_stage_is_one_line_naming_it(local_ray, tiny_disk, capsys) -> None:
    from ray import tune
    from ray.tune import RunConfig, TuneConfig, Tuner, grid_search

    from raykd.tune.sweep import fit_stage

    def trial(config) -> None:  # a checkpoint larger than the disk
        Path(config["disk"], "checkpoint.bin").write_bytes(bytes(8 << 20))
        tune.report({"score": 1.0})

    stage = Tuner(trial, param_space={"run": grid_search([0, 1]), "disk": str(tiny_disk)},
                  tune_config=TuneConfig(max_concurrent_trials=1),
                  run_config=RunConfig(name="stage", storage_path=str(tiny_disk), verbose=0))
    capsys.readouterr()
    assert run_command(lambda: fit_stage(stage, "search", 2, str(tiny_disk / "stage")) and 0, []) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"raykd: error: no space left writing {tiny_disk / 'stage'}; free space there (or point " \
        "--storage/--cache-dir " \
        "elsewhere) and rerun with --resume"


def test_a_ray_that_does_not_start_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    import ray

    from raykd.tune.spec import connect

    def timed_out(**_):  # what Ray raises when its raylet gives up waiting for the dashboard agent under load
        raise RuntimeError("The node with node id: 01 and address: 127.0.0.1 and node name: 127.0.0.1 has been "
                           "marked dead because the detector has missed too many heartbeats from it.")

    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert run_command(lambda: connect(None) or 0, []) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("raykd: error: a local Ray did not start or answer: The node with node id") and \
        "(Ray's logs: /tmp/ray/session_latest/logs)" in line


@pytest.mark.parametrize("sweep, flags, message", [
    ("mtkd_div2k", ["--teachers", "swinir", "nope"], "nope"),
    ("mtkd_div2k", ["--teacher-kwargs", "swinir={bad"], "--teacher-kwargs swinir '{bad' is not valid JSON"),
    ("mtkd_div2k", ["--teacher-checkpoints", "swinir=/no/such/dir"], "--teacher-checkpoints swinir=/no/such/dir: no "
                                                                     "such file or directory"),
    ("figkd_tinyimagenet", ["--storage", "FILE/runs"], "is a file, not a directory"),
])
def test_teacher_flags_and_storage_are_refused_before_ray(tmp_path, capsys, sweep, flags, message) -> None:
    import ray

    from raykd.sweeps import run

    (tmp_path / "FILE").write_text("not a directory")
    flags = [str(tmp_path / f) if f.startswith("FILE") else f for f in flags]
    storage = [] if "--storage" in flags else ["--storage", str(tmp_path / "runs")]
    assert run(sweep, ["--smoke", *storage, "--cache-dir", str(tmp_path / "cache"), *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line and not ray.is_initialized(), line
