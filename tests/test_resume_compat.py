"""Configs that evolve: a checkpoint records its meta.json layout version, and resume compares the config fields
that change the result, reading the saved config back so that a field added since takes its default."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raykd.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, override
from raykd.data.store import Store
from raykd.models.checkpoint import META_FILE, META_SCHEMA, MODEL_FILE, read_meta
from raykd.train.loop import train
from raykd.train.tasks import build_task

DATA = DataConfig(dataset="demo", image_size=16)
# fields with defaults that a checkpoint written before they existed would lack (an older ModelConfig, DataConfig,
# OptimConfig, MethodConfig)
ADDED_LATER = (("model", "init_keymap"), ("data", "reuse_views"), ("data", "y_channel"), ("optim", "gamma"),
               ("optim", "milestones"), ("method", "student_input"))


def _cfg(**changes) -> TrainConfig:
    base = TrainConfig(model=ModelConfig("resnet8"), data=DATA,
                       optim=OptimConfig(lr=0.1, epochs=2, batch_size=32, steps_per_epoch=2))
    return override(base, changes)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_task(DATA, 0, store=Store(tmp_path_factory.mktemp("store")))


class Interrupted(Exception):
    pass


def _first_epoch(task, out: Path, cfg: TrainConfig) -> dict:
    """Run ``cfg`` and stop it after its first epoch's checkpoint; that checkpoint's meta.json."""

    def stop(metrics, checkpoint):
        raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, task=task, checkpoint_dir=out, report=stop)
    return json.loads((out / META_FILE).read_text())


def test_a_checkpoint_records_its_layout_version(tmp_path: Path, task) -> None:
    meta = _first_epoch(task, tmp_path / "run", _cfg())
    assert meta["schema"] == META_SCHEMA >= 1


def test_a_checkpoint_written_before_fields_existed_resumes_at_their_defaults(tmp_path: Path, task) -> None:
    cfg = _cfg()
    straight = train(cfg, task=task, checkpoint_dir=tmp_path / "straight")
    out = tmp_path / "old"
    meta = _first_epoch(task, out, cfg)
    del meta["schema"]  # written before raykd recorded a layout version
    for group, name in ADDED_LATER:
        del meta["config"][group][name]
    (out / META_FILE).write_text(json.dumps(meta))  # (meta.json is not in its own manifest)

    resumed = train(cfg, task=task, checkpoint_dir=out, resume_from=out)
    assert resumed["epoch"] == 2 and resumed["val_top1"] == straight["val_top1"]
    a, b = load_file(str(tmp_path / "straight" / MODEL_FILE)), load_file(str(out / MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)  # it continued the same run, from epoch 1
    rewritten = read_meta(out)
    assert rewritten["schema"] == META_SCHEMA and "y_channel" in rewritten["config"]["data"]


def test_resume_refuses_a_field_that_changes_the_result_naming_it_and_both_values(tmp_path: Path, task) -> None:
    cfg = _cfg()
    out = tmp_path / "run"
    _first_epoch(task, out, cfg)
    refusals = {"optim.lr": (0.2, "optim.lr: 0.1 in the checkpoint, 0.2 now"),
                "model.name": ("resnet14", "model.name: 'resnet8' in the checkpoint, 'resnet14' now"),
                "seed": (3, "seed: 0 in the checkpoint, 3 now"),
                "data.patch_size": (32, "data.patch_size: 48 in the checkpoint, 32 now")}
    for field, (value, said) in refusals.items():
        with pytest.raises(ValueError, match=f"cannot resume {out} as a different run: {said}"):
            train(override(cfg, {field: value}), task=task, resume_from=out)
    # how long it trains and how it computes are not a different run
    again = train(override(cfg, {"optim.epochs": 3, "runtime.progress": True, "runtime.check_data": False}),
                  task=task, resume_from=out)
    assert again["epoch"] == 3


def test_a_checkpoint_of_a_newer_layout_is_refused(tmp_path: Path, task) -> None:
    out = tmp_path / "run"
    meta = _first_epoch(task, out, _cfg())
    meta["schema"] = META_SCHEMA + 1
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"newer raykd \\(meta.json schema {META_SCHEMA + 1}; this one reads up to "
                                         f"{META_SCHEMA}\\)"):
        train(_cfg(), task=task, resume_from=out)
