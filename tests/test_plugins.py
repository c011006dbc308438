"""A user's own model and method, named by import path, run through a whole sweep without touching raykd."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import ray

from conftest import start_local_ray
from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig
from raykd.methods import create_method
from raykd.models import create_model
from raykd.registry import UntrustedPlugin, trust_plugins
from raykd.teachers.spec import TeacherSpec
from raykd.train.loop import train
from raykd.train.tasks import build_task
from raykd.tune.sweep import decoded_splits, run_sweep

PLUGIN = '''
"""A user's package: a small classifier and a distillation method, outside raykd."""
import torch.nn as nn
import torch.nn.functional as F

from raykd.methods import Float, Method


class TinyNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(16, num_classes)

    def get_classifier(self):
        return self.head

    def forward(self, x):
        return self.head(self.features(x))


def tinynet(num_classes=10):
    return TinyNet(num_classes)


class SoftL2(Method):
    """CE + w * ||softmax(z_s) - softmax(z_t)||^2: a toy method with its own default and search space."""

    name = "soft_l2"
    hparams = {"w": Float(1.0, search=(0.5, 2.0))}

    def teacher_outputs(self):
        return ("logits",)

    def forward(self, student, teacher, target, epoch):
        diff = student["logits"].softmax(1) - teacher["logits"].softmax(1)
        return {"ce": F.cross_entropy(student["logits"], target), "l2": self.params["w"] * diff.pow(2).sum(1).mean()}
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    (root / "myplugin").mkdir()
    (root / "myplugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    # how a user makes their module importable in every Ray process (or: ray job submit --working-dir .)
    start_local_ray(runtime_env={"py_modules": [str(root / "myplugin")]})
    yield root
    ray.shutdown()
    mp.undo()


def test_a_users_model_and_method_run_a_sweep_by_import_path(plugin, tmp_path: Path) -> None:
    assert type(create_model("myplugin:tinynet", num_classes=3)).__name__ == "TinyNet"
    assert create_method("myplugin:SoftL2", "cls").params == {"w": 1.0}
    base = TrainConfig(model=ModelConfig("myplugin:tinynet"), data=DataConfig(dataset="demo", image_size=16),
                       optim=OptimConfig(lr=0.1, epochs=1, batch_size=64, steps_per_epoch=3))
    splits = decoded_splits(base, str(tmp_path / "cache"))
    task = build_task(base.data, 0, {name: ray.get(ref) for name, ref in splits.items()})
    train(base, task=task, checkpoint_dir=tmp_path / "teacher")
    with pytest.raises(UntrustedPlugin, match="'myplugin:tinynet', an import path"):
        TeacherSpec.from_checkpoint(tmp_path / "teacher")  # its meta.json names code: imported only once trusted
    trust_plugins(["myplugin:tinynet"])
    teacher = TeacherSpec.from_checkpoint(tmp_path / "teacher")
    assert teacher.model == "myplugin:tinynet"
    sweep = SweepConfig(name="plugins", methods=("none", "myplugin:SoftL2"), num_samples=3, seeds=0, verbose=0,
                        storage=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    summary = run_sweep(base, teacher, sweep, splits=splits)
    table = pd.read_parquet(tmp_path / "runs" / "plugins" / "results.parquet")
    assert summary["failed"] == 0 and set(table["method"]) == {"none", "myplugin:SoftL2"}
    plugin_rows = table[table["method"] == "myplugin:SoftL2"]
    assert (plugin_rows["cache_hits"] > 0).all() and plugin_rows["w"].between(0.5, 2.0).all()
