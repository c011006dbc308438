"""One precision rule for teacher outputs (:mod:`raykd.teachers.precision`): a student trained with the same seed
from stored tables, from live teacher actors and from an in-process teacher is the same run, bit for bit, at the
default float16 and at the float32 option; the precision is part of a table's key and recorded with the run.

One local Ray (2 CPUs) serves the module; the data is the built-in digits demo at 16x16, the teacher a briefly
trained resnet8 and the student a resnet8 distilled with FiGKD for 2 epochs of 3 steps.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import ray
import torch
from safetensors.torch import load_file

from conftest import decoded_demo, task_of, trained_teacher
from raykd.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, SweepConfig, TeacherServiceConfig,
                          TrainConfig, from_json, override, to_json)
from raykd.models.checkpoint import META_FILE, MODEL_FILE
from raykd.teachers.service import ServiceClient, TeacherRequest, start_service, stop_service
from raykd.teachers.sources import InProcessTeacher
from raykd.teachers.spec import TeacherSpec
from raykd.train.loop import train
from raykd.train.mtkd import stage1_document
from raykd.tune.report import trials_table

BASE = TrainConfig(model=ModelConfig("resnet8"), data=DataConfig(dataset="demo", image_size=16),
                   optim=OptimConfig(lr=0.1, epochs=2, batch_size=64, steps_per_epoch=3))
STUDENT = override(BASE, {"method.name": "figkd"})
OUTPUTS = ("logits",)


@pytest.fixture(scope="module")
def splits(local_ray, tmp_path_factory):
    return decoded_demo(BASE, tmp_path_factory)


@pytest.fixture(scope="module")
def task(splits):
    return task_of(BASE, splits)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, task) -> TeacherSpec:
    return trained_teacher(BASE, task, tmp_path_factory, **{"optim.epochs": 1})


def _distil(task, source, directory: Path) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """The student's per-epoch metrics (those the seed decides: losses, val metrics, lr), its final weights and
    its checkpoint's metadata."""
    epochs = []

    def record(metrics, _):
        epochs.append({k: v for k, v in metrics.items()
                       if k.startswith(("train_", "val_", "best_")) or k in ("epoch", "lr")})

    train(STUDENT, task=task, teacher=source, checkpoint_dir=directory, report=record)
    return epochs, load_file(str(directory / MODEL_FILE)), json.loads((directory / META_FILE).read_text())


def _served(task, teacher, splits, directory: Path, mode: str, precision: str):
    """A run whose teacher outputs come from a teacher service in ``mode``, and that service's statistics."""
    service = start_service([TeacherRequest(teacher, OUTPUTS)], BASE.data, splits["train"], BASE.optim.epochs,
                            TeacherServiceConfig(mode=mode, precision=precision), str(directory / "store"),
                            f"precision-{mode}-{precision}")
    try:
        run = _distil(task, ServiceClient(service, teacher.name, OUTPUTS).source("cls", 4, STUDENT.seed),
                      directory / mode)
        stats = ray.get(service.statistics.remote())[teacher.name]
    finally:
        stop_service(service)
    return run, stats


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_stored_live_and_in_process_teacher_outputs_train_the_same_student(local_ray, splits, task, teacher,
                                                                         tmp_path, precision) -> None:
    (stored, stored_weights, stored_meta), stats = _served(task, teacher, splits, tmp_path, "stored", precision)
    (live, live_weights, live_meta), _ = _served(task, teacher, splits, tmp_path, "live", precision)
    in_process, in_process_weights, in_process_meta = _distil(
        task, InProcessTeacher(teacher.build(), OUTPUTS, precision=precision), tmp_path / "in-process")

    assert len(stored) == BASE.optim.epochs and stored[-1]["val_top1"] > 0
    assert stored == live == in_process  # exact float equality, epoch by epoch
    assert stored_weights.keys() == live_weights.keys() == in_process_weights.keys()
    for name, value in stored_weights.items():
        assert torch.equal(value, live_weights[name]) and torch.equal(value, in_process_weights[name]), name
    assert stored_meta["teacher_precision"] == live_meta["teacher_precision"] == in_process_meta[
        "teacher_precision"] == precision
    # the tables hold the precision's bytes: every logit of every one of len(task) rows, 2 or 4 bytes each, plus
    # the int64 index
    item = {"float16": 2, "float32": 4}[precision]
    assert stats["tables_built"] == BASE.optim.epochs
    assert stats["table_bytes"] == len(task) * (task.num_classes * item + 8)


def test_a_table_of_one_precision_never_serves_a_run_of_another(local_ray, splits, teacher, tmp_path) -> None:
    """Both precisions of the same epoch, in one store: two tables under two keys, neither loaded for the other."""
    keys, built = {}, {}
    for precision in ("float16", "float32"):
        service = start_service([TeacherRequest(teacher, OUTPUTS)], BASE.data, splits["train"], 1,
                                TeacherServiceConfig(mode="stored", precision=precision), str(tmp_path / "store"),
                                f"precision-key-{precision}")
        try:
            source = ServiceClient(service, teacher.name, OUTPUTS).source("cls", 4, 0)
            source.begin_epoch(0)
            keys[precision], built[precision] = source.current.key, ray.get(service.statistics.remote())
        finally:
            stop_service(service)
        assert source.precision == precision
        assert source.current.table["logits"].dtype == precision
    assert keys["float16"] != keys["float32"]
    assert all(stats[teacher.name]["tables_built"] == 1 for stats in built.values())


def test_an_aggregated_mtkd_teacher_is_keyed_by_the_precision_of_the_tables_it_learnt_from(teacher) -> None:
    documents = {p: stage1_document([teacher], BASE, "train", "val", p) for p in ("float16", "float32")}
    assert documents["float16"] != documents["float32"]
    assert stage1_document([teacher], BASE, "train", "val") == documents["float16"]


def test_precision_is_checked_and_old_configs_load_with_the_default() -> None:
    with pytest.raises(ConfigError, match=r"teacher_service\.precision = 'bfloat16': expected one of \['float16', "
                                          r"'float32'\]"):
        TeacherServiceConfig(precision="bfloat16")
    saved = to_json(SweepConfig())
    del saved["teacher_service"]["precision"]  # a sweep config written before the option existed
    assert from_json(SweepConfig, saved).teacher_service.precision == "float16"


def test_results_table_records_each_trials_teacher_precision(tmp_path) -> None:
    """``results.parquet`` has the precision each trial's teacher outputs came in; null for a method without one."""
    def result(method, precision):
        last = {"val_top1": 50.0, "epoch": 1, "teacher_precision": precision}
        return SimpleNamespace(config={"method": method}, metrics=last, error=None, path=f"/runs/{method}",
                               metrics_dataframe=pd.DataFrame([{**last, "timestamp": 0}]), best_checkpoints=[],
                               checkpoint=None)

    table, _ = trials_table([result("kd", "float32"), result("none", None)], "val_top1", "cls")
    table.to_parquet(tmp_path / "results.parquet", index=False)
    column = pd.read_parquet(tmp_path / "results.parquet").set_index("method")["teacher_precision"]
    assert column["kd"] == "float32" and pd.isna(column["none"])
