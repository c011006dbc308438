"""Faults and bad input (issue #10): real processes killed with SIGKILL, and inputs refused naming the value or file.

* a teacher actor killed during the teacher pass: the table completes, equals an unkilled run's, is counted once,
  and nothing half-written is left in the store; the teacher service itself killed: it restarts, finishes the table
  and frees the dead instance's reservation;
* a trial process killed mid-epoch: the trial resumes from its checkpoint and ends with the weights and counters
  of an unkilled run;
* the sweep driver killed during teacher training, and (resumed) again mid-sweep: ``--resume`` continues the
  teacher from its last epoch and completes the sweep;
* a crash between checkpoint writes: ``tests/test_train.py::
  test_a_crash_between_checkpoint_writes_always_leaves_a_complete_checkpoint``.

The data is the built-in digits at 16x16; Ray is one local instance with 2 CPUs (the sweep-driver tests start
their own, as the sweep scripts do).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import decoded_demo, task_of, trained_teacher
from raykd.cli import main as cli_main
from raykd.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig,
                          TrainConfig, override)
from raykd.console import UserError
from raykd.data.builtin import make_demo_classification
from raykd.models import create_model
from raykd.models.checkpoint import MODEL_FILE, CheckpointError, manifest
from raykd.sweeps.figkd_tinyimagenet import FiGKDTinyImageNet
from raykd.teachers.service import TeacherRequest, start_service, stop_service
from raykd.teachers.spec import TeacherSpec
from raykd.train.checkpoint import save_checkpoint
from raykd.train.loop import train
from raykd.tune import resources
from raykd.tune.resources import InsufficientResources
from raykd.tune.spec import run_spec
from raykd.tune.sweep import run_sweep

from tune_rows import live_rows, trial_rows

REPO = Path(__file__).resolve().parents[1]
BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=2, batch_size=64, steps_per_epoch=3))


@pytest.fixture(scope="module")
def splits(local_ray, tmp_path_factory):
    return decoded_demo(BASE, tmp_path_factory)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, splits) -> TeacherSpec:
    return trained_teacher(BASE, task_of(BASE, splits), tmp_path_factory,
                           **{"optim.epochs": 2, "optim.steps_per_epoch": 10})


def _checkpoint(path: Path, model: str, **kwargs) -> Path:
    """A raykd checkpoint directory of ``model`` with fresh (untrained) weights."""
    torch.manual_seed(0)
    return save_checkpoint(path, model=create_model(model, **kwargs), meta={"model": model, "model_kwargs": kwargs})


def _sweep(tmp_path: Path, **changes) -> SweepConfig:
    values = dict(name="sweep", methods=("kd",), num_samples=1, storage=str(tmp_path / "runs"),
                  cache_dir=str(tmp_path / "cache"), seeds=0, verbose=0)
    return SweepConfig(**{**values, **changes})


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ------------------------------------------------------------------------------------------------ (a) teacher actor


@pytest.mark.slow
def test_a_teacher_actor_killed_during_the_teacher_pass(local_ray, splits, tmp_path) -> None:
    """SIGKILL the teacher actor while it computes the table: Ray restarts it in its placement group and reruns the
    chunk it had in flight; the table completes, equals an unkilled run's, is counted once, and the store holds
    only complete, verified tables."""
    slow = TeacherSpec.from_checkpoint(_checkpoint(tmp_path / "teacher", "resnet8x4", num_classes=10))  # ~10x resnet8
    config = TeacherServiceConfig(mode="stored")

    def run(store: Path, kill: bool):
        service = start_service([TeacherRequest(slow, ("logits",))], BASE.data, splits["train"], 1, config,
                                str(store), store.name)
        try:
            ray.get(service.start.remote([0]))
            killed = None
            if kill:
                pid = ray.get(service.actor_pids.remote(slow.name))[0]
                started = _cpu_seconds(pid)
                while _cpu_seconds(pid) - started < 0.5:  # the actor is computing the first chunk
                    time.sleep(0.05)
                assert ray.get(service.produced.remote(slow.name)) == {}
                os.kill(pid, signal.SIGKILL)
                killed = (pid, time.time())
            table = ray.get(ray.get(service.table.remote(slow.name, 0, 0, True))[0])
            return table, ray.get(service.statistics.remote())[slow.name], \
                ray.get(service.produced.remote(slow.name)), killed
        finally:
            ray.get(service.shutdown.remote())
            ray.kill(service, no_restart=True)

    table, stats, produced, (pid, killed_at) = run(tmp_path / "killed", kill=True)
    clean, clean_stats, _, _ = run(tmp_path / "clean", kill=False)
    assert _gone(pid) and produced[(0, 0)] > killed_at  # killed before the table existed
    rows = np.arange(len(ray.get(splits["train"])))
    np.testing.assert_array_equal(table.lookup(rows)["logits"], clean.lookup(rows)["logits"])
    assert stats == clean_stats  # computed once: samples_computed = one table's rows, tables_built = 1
    assert stats["samples_computed"] == len(rows) and stats["tables_built"] == 1
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == [f"{table.key}.parquet"]  # no temporaries


@pytest.mark.slow
def test_the_teacher_service_killed_during_the_teacher_pass(local_ray, splits, tmp_path) -> None:
    """SIGKILL the service itself while its actor computes: Ray restarts it (its teacher weights kept alive by the
    driver), the request in flight is retried on the new instance, which frees the dead one's placement group
    and makes the table; once stopped, no CPU stays reserved."""
    slow = TeacherSpec.from_checkpoint(_checkpoint(tmp_path / "teacher", "resnet8x4", num_classes=10))
    service = start_service([TeacherRequest(slow, ("logits",))], BASE.data, splits["train"], 1,
                            TeacherServiceConfig(mode="stored"), str(tmp_path / "store"), "servicekill")
    try:
        ray.get(service.start.remote([0]))
        pid = ray.get(service.__ray_call__.remote(lambda _: os.getpid()))
        actor = ray.get(service.actor_pids.remote(slow.name))[0]
        started = _cpu_seconds(actor)
        while _cpu_seconds(actor) - started < 0.5:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        table = ray.get(ray.get(service.table.remote(slow.name, 0, 0, True))[0])
        stats = ray.get(service.statistics.remote())[slow.name]
        assert ray.get(service.__ray_call__.remote(lambda _: os.getpid())) != pid
    finally:
        stop_service(service)
    rows = len(ray.get(splits["train"]))
    assert len(table.lookup(np.arange(rows))["logits"]) == rows
    # the dead instance's finished chunks stay counted (counters survive a restart): computed again, counted again
    assert stats["tables_built"] == 1 and rows <= stats["samples_computed"] < 2 * rows
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2  # the dead instance's placement group was freed


def test_the_teacher_counters_survive_a_service_restart(local_ray, splits, teacher, tmp_path) -> None:
    """The rows a killed service instance computed were computed: its successor's counters go on from them."""
    service = start_service([TeacherRequest(teacher, ("logits",))], BASE.data, splits["train"], 2,
                            TeacherServiceConfig(mode="stored"), str(tmp_path / "store"), "counters")
    try:
        # (asked as prefetches: a training request would also start the next epoch's table, whose rows a kill
        # might catch half counted)
        ray.get(ray.get(service.table.remote(teacher.name, 0, 0, False))[0])
        os.kill(ray.get(service.__ray_call__.remote(lambda _: os.getpid())), signal.SIGKILL)
        ray.get(ray.get(service.table.remote(teacher.name, 1, 0, False))[0])  # answered by the restarted instance
        stats = ray.get(service.statistics.remote())[teacher.name]
    finally:
        stop_service(service)
    assert stats["tables_built"] == 2 and stats["samples_computed"] == 2 * len(ray.get(splits["train"]))


def test_the_tables_a_sweep_will_write_are_projected_and_refused_beyond_the_free_disk(local_ray, splits, teacher,
                                                                                      tmp_path) -> None:
    from raykd.tune.sweep import check_table_space

    service = start_service([TeacherRequest(teacher, ("logits",))], BASE.data, splits["train"], 2,
                            TeacherServiceConfig(mode="stored"), str(tmp_path / "store"), "projection")
    try:
        before = ray.get(service.projection.remote([0, 1]))[teacher.name]
        ray.get(ray.get(service.table.remote(teacher.name, 0, 0, True))[0])
        after = ray.get(service.projection.remote([0, 1]))[teacher.name]
    finally:
        stop_service(service)
    rows = len(ray.get(splits["train"]))
    assert before == {"tables": 4, "table_bytes": rows * 10 * 2,  # 2 seeds x 2 views of 10 float16 logits a row
                      "rows": rows, "classes": 10, "logits_bytes": 10 * 2, "precision": "float16"}
    assert after == {**before, "tables": 3}  # a table already stored is not counted again
    with pytest.raises(UserError, match=r"teacher tables this sweep writes need 8192\.00 GiB in .* GiB is free "
                                        r"there: free space, give another --cache-dir, keep fewer logits"):
        check_table_space({teacher.name: {"tables": 4, "table_bytes": 2 * 2**40}}, str(tmp_path / "store"))


def test_the_service_needs_no_teacher_files_on_its_node(local_ray, splits, teacher, tmp_path) -> None:
    """The driver reads the weights and sends them through the object store: a service (and actors) on a node
    without the checkpoint, here one deleted after the service started, still serves the teacher."""
    copy = Path(shutil.copytree(teacher.checkpoint, tmp_path / "copy"))
    spec = TeacherSpec.from_checkpoint(copy)
    service = start_service([TeacherRequest(spec, ("logits",))], BASE.data, splits["train"], 1,
                            TeacherServiceConfig(mode="auto"), str(tmp_path / "store"), "nofiles")
    shutil.rmtree(copy)
    try:
        ray.get(service.start.remote([0]))
        table = ray.get(ray.get(service.table.remote(spec.name, 0, 0, True))[0])
    finally:
        ray.get(service.shutdown.remote())
        ray.kill(service, no_restart=True)
    assert len(table.lookup(np.arange(4))["logits"]) == 4


# ------------------------------------------------------------------------------------------------- (b) trial worker


class TrialKiller(threading.Thread):
    """SIGKILLs the process of the first trial of experiment ``name`` that has reported epoch ``after``, ``delay``
    seconds later (while it trains the next epoch)."""

    def __init__(self, name: str, after: int, delay: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.name, self.after, self.delay = name, after, delay
        self.killed: tuple[str, int] | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for trial, rows in live_rows(self.name).items():
                if rows and rows[-1]["epoch"] == self.after:
                    time.sleep(self.delay)
                    os.kill(rows[-1]["pid"], signal.SIGKILL)
                    self.killed = (trial, rows[-1]["pid"])
                    return
            time.sleep(0.05)


def _final_weights(trial_dir: Path) -> dict[str, torch.Tensor]:
    last = sorted(trial_dir.glob("checkpoint_*"))[-1]
    return load_file(str(last / MODEL_FILE))


@pytest.mark.slow
def test_a_trial_killed_mid_epoch_resumes_from_its_checkpoint(local_ray, teacher, splits, tmp_path) -> None:
    """SIGKILL a trial's process during epoch 2 of 4: Tune (FailureConfig) restarts it from its epoch-1 checkpoint
    in a new process; it reports epochs 1..4 once each and ends with exactly the weights, accuracy and counters of
    the same trial run without the kill."""
    from ray.tune import FailureConfig

    base = override(BASE, {"optim.epochs": 4, "optim.steps_per_epoch": None})
    sweep = _sweep(tmp_path, name="killed", failure=FailureConfig(max_failures=2))
    killer = TrialKiller("killed", after=1)
    killer.start()
    try:
        run_sweep(base, teacher, sweep, splits=splits)
    finally:
        killer.done.set()
    run_sweep(base, teacher, replace(sweep, name="clean"), splits=splits)

    assert killer.killed is not None, "the trial finished before it could be killed"
    trial, pid = killer.killed
    # the rows the new process reported: from the epoch after the checkpoint on, once each (Tune's result.json may
    # lose the killed process's rows: on a restart it copies back its last synced copy)
    rows = [r for r in trial_rows(tmp_path / "runs" / "killed")[trial] if r["pid"] != pid]
    epochs = [r["epoch"] for r in rows]  # killed 0.3 s after its epoch-1 report: during epoch 2 (or 3)
    assert epochs[0] in (2, 3) and epochs == list(range(epochs[0], 5)) and _gone(pid)  # resumed, not from 1
    killed, clean = (pd.read_parquet(tmp_path / "runs" / name / "results.parquet").iloc[0]
                     for name in ("killed", "clean"))
    assert killed["status"] == clean["status"] == "ok"
    for column in ("epochs", "last_val_top1", "best_val_top1", "cache_hits", "teacher_samples_computed"):
        assert killed[column] == clean[column], column
    assert killed["cache_hits"] == 4 * len(ray.get(splits["train"]))  # the lost partial epoch is not counted
    (clean_trial,) = [p for p in (tmp_path / "runs" / "clean").iterdir() if p.name.startswith("run_trial")]
    a, b = _final_weights(tmp_path / "runs" / "killed" / trial), _final_weights(clean_trial)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_restarted_trial_takes_the_newest_complete_checkpoint_it_persisted(tmp_path, monkeypatch) -> None:
    """Tune registers a reported checkpoint only after another round trip to the trial; a trial lost in between
    is restarted with an older one (here epoch 1, or none). The trial resumes from the newest complete checkpoint
    in its storage instead (epoch 2), never from one cut short (epoch 3, its weights half-uploaded)."""
    import pyarrow.fs as pafs
    from ray import tune

    from raykd.train import worker

    trial_dir = tmp_path / "trial"
    model = create_model("resnet8", num_classes=10)
    for index in range(3):
        save_checkpoint(trial_dir / f"checkpoint_{index:06d}", model=model,
                        meta={"model": "resnet8", "epoch": index + 1})
    weights = trial_dir / "checkpoint_000002" / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])

    class Storage:
        storage_filesystem, trial_fs_path = pafs.LocalFileSystem(), str(trial_dir)

    context = type("Context", (), {"get_storage": lambda self: Storage})()
    monkeypatch.setattr(worker.tune, "get_context", lambda: context)
    for registered in (None, tune.Checkpoint(str(trial_dir / "checkpoint_000000"))):
        monkeypatch.setattr(worker.tune, "get_checkpoint", lambda: registered)
        assert Path(worker._TuneSession().previous().path).name == "checkpoint_000001"
    monkeypatch.setattr(worker.tune, "get_checkpoint", lambda: tune.Checkpoint(str(trial_dir / "checkpoint_000001")))
    assert Path(worker._TuneSession().previous().path).name == "checkpoint_000001"


def test_a_trial_resumed_from_its_final_checkpoint_reports_its_result(local_ray, splits, tmp_path, monkeypatch) -> None:
    """A trial whose newest checkpoint is its last epoch's (it finished, but Tune had not recorded that when the
    driver or node died) trains nothing more and still reports its result, which Tune requires."""
    from ray import tune

    from raykd.train import worker

    cfg = override(BASE, {"optim.epochs": 1})
    final = train(cfg, task=task_of(BASE, splits), checkpoint_dir=tmp_path / "done")
    reports = []
    monkeypatch.setattr(worker._TuneSession, "previous", lambda self: tune.Checkpoint.from_directory(tmp_path / "done"))
    monkeypatch.setattr(worker._TuneSession, "report", lambda self, metrics, checkpoint: reports.append(metrics))
    worker.train_worker({"trial": worker.TrialSpec(cfg, splits)})
    assert [(r["epoch"], r["val_top1"]) for r in reports] == [(1, final["val_top1"])]


# ------------------------------------------------------------------------------------------------------ (c) driver


def _driver(cache: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "figkd_tinyimagenet.py"), "--smoke", "--cache-dir", str(cache),
            "--storage", str(storage), "--name", name, "--methods", "kd", "--num-samples", "3", "--seeds", "0",
            "--epochs", "2", "--teacher-epochs", "4", *extra]


class Driver:
    """A sweep script in its own session (so Ray's reaper, which kills the driver's process group when the driver
    dies, cannot reach pytest), its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"driver exited ({self.proc.returncode}) early:\n{self.output[-5000:]}")
            if time.time() > deadline:
                self.kill()
                raise AssertionError(f"timed out:\n{self.output[-5000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the driver, then wait until Ray's reaper has taken down the processes it started."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGKILL)

    def finish(self, timeout: float = 1200) -> str:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.reader.join(10)
        assert self.proc.returncode == 0, self.output[-5000:]
        return self.output


@pytest.fixture(scope="module")
def driver_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("driver")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYKD_CACHE": str(root / "default-cache")}
    env["RAY_ADDRESS"] = "local"  # each driver starts its own Ray, never joins one another test left running
    return root / "cache", root / "runs", env, root / "default-cache"


@pytest.mark.slow
def test_a_killed_driver_resumes_its_teacher_then_its_sweep(driver_dirs) -> None:
    """The driver killed during teacher training, then (resumed) killed again mid-sweep, then resumed to the end:
    the teacher continues from its last epoch, the sweep from Tune's state, every trial's epochs reported once."""
    cache, storage, env, default_cache = driver_dirs
    first = Driver(_driver(cache, storage, "killed"), env)
    epoch = re.compile(r"teacher resnet8x4: epoch (\d)/4")
    first.wait_for(lambda: any(int(m) >= 2 for m in epoch.findall(first.output)))
    first.kill()
    done = max(int(m) for m in epoch.findall(first.output))

    second = Driver(_driver(cache, storage, "killed", "--resume"), env)
    second.wait_for(lambda: any((storage / "killed").glob("*/checkpoint_000000")))  # a trial's epoch 1
    second.kill()
    resumed = re.search(r"resuming teacher training from (\S+) \(epoch (\d) done\)", second.output)
    assert resumed and int(resumed.group(2)) >= done - 1, second.output[-5000:]  # at most the epoch in flight
    assert "epoch 1/4" not in second.output  # not trained from the start
    started = {p.parent.name for p in (storage / "killed").glob("*/checkpoint_000000")}
    assert not (storage / "killed" / "results.parquet").exists()

    output = Driver(_driver(cache, storage, "killed", "--resume"), env).finish()
    assert "reusing teacher" in output
    (stored,) = (cache / "teachers").iterdir()  # the teacher; no .partial, temporary or half-committed dirs
    assert not stored.name.startswith(".") and re.fullmatch(r"resnet8x4-[0-9a-f]{16}", stored.name)
    table = pd.read_parquet(storage / "killed" / "results.parquet")
    assert len(table) == 3 and (table["status"] == "ok").all() and table["epochs"].between(1, 2).all()  # ASHA
    # Tune's state was restored (a fresh start would have new trial ids), each trial's epochs reported once
    assert all(any(f"_{trial}_" in name for trial in table["trial"]) for name in started), (started, table["trial"])
    for rows in trial_rows(storage / "killed").values():
        assert [r["epoch"] for r in rows] == list(range(rows[0]["epoch"], rows[0]["epoch"] + len(rows)))
    assert not default_cache.exists()  # --cache-dir is honoured for the built-in digits too


# ---------------------------------------------------------------------------------------------------- bad input


def _smoke(tmp_path: Path, *extra: str) -> list[str]:
    return ["--smoke", "--cache-dir", str(tmp_path / "cache"), "--storage", str(tmp_path / "runs"), "--name", "bad",
            "--methods", "kd", "--num-samples", "1", "--seeds", "0", "--epochs", "1", *extra]


def test_a_teacher_for_other_classes_is_refused_before_the_teacher_pass(local_ray, tmp_path) -> None:
    five = _checkpoint(tmp_path / "five", "resnet8", num_classes=5)
    with pytest.raises(ValueError, match=rf"{re.escape(str(five))}.* 5 classes, the data has 10"):
        run_spec(FiGKDTinyImageNet(), _smoke(tmp_path, "--teacher", str(five)))
    assert "raykd-teachers-bad" not in ray.util.list_named_actors()  # no service, no teacher pass
    assert len(list((tmp_path / "cache" / "store").glob("*.parquet"))) == 2  # the decoded splits; no teacher table
    assert not (tmp_path / "runs" / "bad").exists()  # Tune never started


def test_damaged_or_mismatched_teacher_weights_are_refused_naming_the_file(local_ray, tmp_path) -> None:
    good = _checkpoint(tmp_path / "good", "resnet8", num_classes=10)
    truncated = Path(shutil.copytree(good, tmp_path / "truncated"))
    data = (truncated / MODEL_FILE).read_bytes()
    (truncated / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(truncated / MODEL_FILE))):
        run_spec(FiGKDTinyImageNet(), _smoke(tmp_path, "--teacher", str(truncated)))

    # consistent files (the manifest matches) but the weights are another network's
    other = Path(shutil.copytree(good, tmp_path / "other"))
    save_checkpoint(tmp_path / "r14", model=create_model("resnet14", num_classes=10), meta={"model": "resnet14"})
    shutil.copy(tmp_path / "r14" / MODEL_FILE, other / MODEL_FILE)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "files": manifest(other)}))
    with pytest.raises(ValueError, match=re.escape(str(other)) + " does not fit CifarResNet"):
        run_spec(FiGKDTinyImageNet(), _smoke(tmp_path, "--teacher", str(other)))

    broken = Path(shutil.copytree(good, tmp_path / "broken"))
    (broken / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=re.escape(str(broken / "meta.json")) + " is not valid JSON"):
        run_spec(FiGKDTinyImageNet(), _smoke(tmp_path, "--teacher", str(broken)))


def _tinyimagenet_with_a_truncated_jpeg(tmp_path: Path) -> tuple[Path, Path]:
    root = Path(shutil.copytree(make_demo_classification(tmp_path / "digits"), tmp_path / "tin"))
    victim = sorted((root / "train" / "digit3" / "images").iterdir())[5]
    jpeg = victim.with_suffix(".JPEG")
    Image.open(victim).convert("RGB").resize((64, 64)).save(jpeg, quality=95)
    victim.unlink()
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    return root, jpeg


def test_a_truncated_jpeg_stops_teacher_training_naming_the_file(local_ray, tmp_path, capsys) -> None:
    root, jpeg = _tinyimagenet_with_a_truncated_jpeg(tmp_path)
    argv = ["--data-root", str(root), "--image-size", "16", "--cache-dir", str(tmp_path / "cache"), "--storage",
            str(tmp_path / "runs"), "--num-samples", "1", "--teacher-epochs", "1", "--seeds", "0"]
    with pytest.raises(ValueError, match=rf"unreadable image {re.escape(str(jpeg))}"):
        run_spec(FiGKDTinyImageNet(), argv)
    assert not (tmp_path / "cache" / "teachers").exists()  # stopped before the teacher trained
    # and `raykd train`, the teacher's command line
    assert cli_main(["train", "--data", "tinyimagenet", "--data-root", str(root), "--image-size", "16",
                     "--out", str(tmp_path / "t"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert str(jpeg) in capsys.readouterr().err


def test_resume_refuses_a_sweep_directory_others_can_write(local_ray, tmp_path) -> None:
    """Resuming unpickles Tune's state from the directory, so one another user can write is refused, at once."""
    directory = tmp_path / "runs" / "sweep"
    directory.mkdir(parents=True)
    (directory / "tuner.pkl").write_bytes(b"not read")
    directory.chmod(0o777)
    sweep = _sweep(tmp_path, methods=("none",), resume=True)
    with pytest.raises(PermissionError, match=rf"--resume refuses {re.escape(str(directory))}.*drwxrwxrwx"):
        run_sweep(BASE, None, sweep)
    assert not (tmp_path / "cache").exists()  # refused before any data was decoded
    directory.chmod(0o755)
    (directory / "tuner.pkl").chmod(0o666)
    with pytest.raises(PermissionError, match=re.escape(str(directory / "tuner.pkl"))):
        run_sweep(BASE, None, sweep)
    (directory / "tuner.pkl").chmod(0o644)
    if os.getuid() == 0:  # root can give the directory to another user
        os.chown(directory, 4242, -1)
        with pytest.raises(PermissionError, match="owned by uid 4242"):
            run_sweep(BASE, None, sweep)


def test_cache_dir_is_honoured_for_the_built_in_digits(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAYKD_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "t"
    assert cli_main(["train", "--data", "demo", "--image-size", "16", "--epochs", "1", "--steps-per-epoch", "1",
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "cache" / "datasets" / "digits-32" / ".complete.json").is_file()
    assert not (tmp_path / "env-cache").exists() and not (tmp_path / "home" / ".cache" / "raykd").exists()


# ------------------------------------------------------------------------------------- requests no node can hold


def test_requests_no_node_can_hold_are_refused_at_once_with_the_numbers(local_ray, tmp_path, monkeypatch) -> None:
    from ray.train import ScalingConfig

    from raykd.tune.teachers import fit_to_a_node

    big_trial = _sweep(tmp_path, scaling=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 3}))
    with pytest.raises(InsufficientResources, match=r"trial worker .* asks for 3 CPU.*nodes 2 CPU/0 GPU"):
        run_sweep(BASE, None, big_trial)
    gpu_trial = _sweep(tmp_path, scaling=ScalingConfig(num_workers=2, use_gpu=True))
    with pytest.raises(InsufficientResources, match=r"1 CPU, 1 GPU"):
        run_sweep(BASE, None, gpu_trial)
    big_teacher = _sweep(tmp_path, teacher_service=TeacherServiceConfig(num_cpus=4))
    with pytest.raises(InsufficientResources, match=r"teacher actor .* asks for 4 CPU.*TeacherServiceConfig"):
        run_sweep(BASE, None, big_teacher)
    with pytest.raises(InsufficientResources, match=r"teacher training asks for 1 CPU, 1 GPU"):
        fit_to_a_node(1)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()  # refused before any work
    with pytest.raises(ConfigError, match="s3://bucket/cache.: the cache holds datasets and trained teachers"):
        run_spec(FiGKDTinyImageNet(), _smoke(tmp_path)[:1] + ["--cache-dir", "s3://bucket/cache"])

    # a `ray up` cluster (cluster.yaml, GPU workers from zero): a node type its autoscaler can launch counts
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(REPO / "cluster.yaml", tmp_path / "ray_bootstrap_config.yaml")
    for sweep in (big_trial, gpu_trial, big_teacher):
        resources.check_sweep_resources(sweep)
    assert fit_to_a_node(1) == {"num_gpus": 1, "num_cpus": 1}
    assert fit_to_a_node(0) == {"num_gpus": 1, "num_cpus": 4}  # the smallest GPU node type, not the largest
    huge = _sweep(tmp_path, scaling=ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"GPU": 8}))
    with pytest.raises(InsufficientResources, match=r"autoscaler can add: 48 CPU/4 GPU, 4 CPU/1 GPU"):
        resources.check_sweep_resources(huge)
    # an autoscaler whose node types cannot be read decides for itself
    (tmp_path / "ray_bootstrap_config.yaml").write_text("available_node_types: {gpu: {max_workers: 2}}")
    resources.check_sweep_resources(huge)
