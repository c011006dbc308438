"""MTKD end to end: three tiny SR teachers, stage 1 on their cached outputs, the aggregated teacher cached in turn
and served to a student trained with ``mtkd``.

One local Ray (2 CPUs) serves the module; the data is the built-in SR photo demo at x4 and every network has a
handful of channels, so the whole pipeline takes seconds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from raykd.data.builtin import make_demo_sr
from raykd.data.sr import to_tensor
from raykd.methods.mtkd import MTKDTeacher, Stage1Result, mtkd_teacher, prepare_mtkd_teacher
from raykd.models import create_model
from raykd.teachers.pool import TeacherService
from raykd.teachers.specs import TeacherSpec
from raykd.train.config import TrainConfig
from raykd.train.loop import train
from raykd.train.sr_task import sr_forward
from raykd.train.tasks import build_task

# name -> (registry model, kwargs, training steps): different families, sizes and training, so they differ
TEACHERS = {
    "edsr": ("edsr_baseline", {"n_resblocks": 1, "n_feats": 8}, 24),
    "rcan": ("rcan", {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4}, 12),
    "srresnet": ("srresnet", {"n_blocks": 1, "n_feats": 8}, 6),
}
AGGREGATOR = {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "mean_residual": True}


def stage1_config(data: TrainConfig) -> TrainConfig:
    """Stage 1: 10 epochs of 8 steps on the demo's six training images."""
    return TrainConfig.from_dict({**data.to_dict(), "epochs": 10, "batch_size": 6, "patches_per_image": 8})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainConfig:
    root = make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")
    return TrainConfig(task="sr", data="demo_sr", data_root=str(root), scale=4, patch_size=16, batch_size=4,
                       optimizer="adam", lr=2e-3, schedule="constant", epochs=1, tile=0, device="cpu",
                       check_data=False)


@pytest.fixture(scope="module")
def teachers(data, tmp_path_factory) -> list[TeacherSpec]:
    root = tmp_path_factory.mktemp("teachers")
    specs = []
    for name, (model, kwargs, steps) in TEACHERS.items():
        cfg = {**data.to_dict(), "model": model, "model_kwargs": kwargs, "patches_per_image": 4,
               "epochs": -(-steps // 6), "steps_per_epoch": 6}
        train(cfg, checkpoint_dir=root / name)
        specs.append(TeacherSpec.from_checkpoint(root / name, name=name))
    return specs


@pytest.fixture(scope="module")
def stage1(local_ray, data, teachers, tmp_path_factory) -> tuple[Stage1Result, Path]:
    cache = tmp_path_factory.mktemp("cache")
    return prepare_mtkd_teacher(teachers, stage1_config(data), cache_dir=cache, aggregator_kwargs=AGGREGATOR), cache


def test_aggregator_beats_its_teachers_mean_on_held_out_images(stage1, teachers, data):
    result, cache = stage1
    agg = result.heldout["mtkd"]["val_psnr"]
    teacher_psnr = {t: result.heldout[t]["val_psnr"] for t in result.teachers}
    print(f"\nheld-out PSNR: {teacher_psnr}, aggregator {agg:.2f} dB "
          f"({agg - max(teacher_psnr.values()):+.2f} dB vs the best, {result.best_teacher})")
    assert result.teachers == sorted(TEACHERS)
    assert len(set(np.round(list(teacher_psnr.values()), 3))) == 3  # the teachers really differ
    assert agg > np.mean(list(teacher_psnr.values()))
    # the three teachers' whole-image outputs were cached once, in the sweep's cache
    assert len(list((cache / "teacher_outputs").glob("*.parquet"))) == 3

    # the composite checkpoint is a plain raykd teacher whose forward is agg(T_edsr, T_rcan, T_srresnet)
    spec = result.spec
    assert spec.model == "mtkd_teacher" and spec.name == "mtkd"
    composite = spec.build("cpu")
    assert isinstance(composite, MTKDTeacher)
    nets = [t.build("cpu") for t in sorted(teachers, key=lambda s: s.name)]
    lr, _ = build_task(data).val.pair(0)
    x = to_tensor(lr)[None]
    with torch.no_grad():
        expected = composite.aggregator([net(x) for net in nets])
        for own, net in zip(composite.teachers, nets):  # the teachers' weights travelled unchanged
            torch.testing.assert_close(own(x), net(x))
        torch.testing.assert_close(composite(x), expected)

    # a second run with the same inputs reuses the checkpoint instead of training again
    again = prepare_mtkd_teacher(teachers, stage1_config(data), cache_dir=cache, aggregator_kwargs=AGGREGATOR)
    assert again.spec.checkpoint == spec.checkpoint and again.heldout == result.heldout


def test_composite_teacher_is_cached_and_served_to_an_mtkd_student(stage1, data):
    result, cache = stage1
    service = TeacherService([result.spec], data, cache, num_cpus=1)
    try:
        handle = service.handles(["logits"], mode="cached")["mtkd"]
        entry = ray.get(handle.table)
        assert service.stats["mtkd"].samples_computed == len(build_task(data).train.base)
        # the actor's cached row is the composite's whole-image output (float16 storage)
        lr, hr = build_task(data).train.base.pair(0)
        with torch.no_grad():
            whole = sr_forward(result.spec.build("cpu"), to_tensor(lr)[None], 4, tile=0)[0]
        row = torch.from_numpy(np.asarray(entry.lookup(0, 0, ["logits"])["logits"][0], dtype=np.float32))
        assert row.shape == whole.shape == to_tensor(hr).shape
        torch.testing.assert_close(row, whole, atol=5e-3, rtol=0)

        sources = []

        def source(task):
            sources.append(handle.source(task))
            return sources[-1]

        student = {**data.to_dict(), "model": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8},
                   "method": "mtkd", "method_params": {"alpha": 0.1, "levels": 2}, "steps_per_epoch": 2}
        metrics = train(student, teacher=source)
        assert math.isfinite(metrics["val_psnr"]) and metrics["train_wavelet"] > 0
        assert sources[0].hits >= 2 * data.batch_size  # two steps' patches, cut from the cached images
        # a second request is a cache hit: no teacher forward at all
        service.handles(["logits"], mode="cached")
        assert service.stats["mtkd"].entries_loaded == 1 and service.stats["mtkd"].entries_built == 1
    finally:
        service.shutdown()


def test_composite_builder_checks_its_teachers():
    tiny = {"model": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 4}}
    model = create_model("mtkd_teacher", teachers=[tiny, tiny], aggregator_kwargs=AGGREGATOR, scale=2)
    assert model(torch.rand(1, 3, 6, 9)).shape == (1, 3, 12, 18)
    assert {k.split(".")[0] for k in model.state_dict()} == {"teachers", "aggregator"}
    with pytest.raises(ValueError, match="scale=4 but the aggregated teacher is x2"):
        mtkd_teacher([{**tiny, "model_kwargs": {"scale": 4}}], scale=2)
    with pytest.raises(ValueError, match="unknown keys: \\['weights'\\]"):
        mtkd_teacher([{**tiny, "weights": "x.pt"}])
