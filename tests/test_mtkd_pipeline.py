"""MTKD stage 1 on v2 (raykd/train/mtkd.py): the aggregator's optimisation and schedule, aligned (teacher patches,
HR patch) views, the composite checkpoint and its held-out table, the store key, and, with Ray, the whole stage:
teacher tables from the service, the aggregated teacher stored and reused, served to a student trained with mtkd.

The data is the built-in SR photo demo at x4 and every network has a handful of channels."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import start_local_ray
from raykd.config import (DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherConfig,
                          TeacherServiceConfig, TrainConfig)
from raykd.data.batches import SRBatches
from raykd.data.builtin import make_demo_sr
from raykd.data.store import Store
from raykd.data.views import PatchViews
from raykd.models import create_model
from raykd.models.aggregator import MTKDTeacher
from raykd.teachers.sources import StoredTeacher, run_sr_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable
from raykd.train.loop import shard_order, train
from raykd.train.mtkd import (PAPER_LR, AlignedPatches, Stage1Result, stage1_config, stage1_document,
                              stage1_milestones, train_aggregator, train_stage1)
from raykd.train.tasks import build_task

CPU = torch.device("cpu")
# name -> (registry model, kwargs, training steps): different families, sizes and training, so they differ
TEACHERS = {
    "edsr": ("edsr_baseline", {"n_resblocks": 1, "n_feats": 8}, 6),
    "rcan": ("rcan", {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4}, 3),
    "srresnet": ("srresnet", {"n_blocks": 1, "n_feats": 8}, 1),
}
AGGREGATOR = {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "mean_residual": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DataConfig:
    root = make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")
    return DataConfig(task="sr", dataset="demo_sr", root=str(root), scale=4, patch_size=16, patches_per_image=4)


@pytest.fixture(scope="module")
def teachers(data, tmp_path_factory) -> list[TeacherSpec]:
    root = tmp_path_factory.mktemp("teachers")
    specs = []
    for name, (model, kwargs, steps) in TEACHERS.items():
        cfg = TrainConfig(model=ModelConfig(model, kwargs), data=data, runtime=RuntimeConfig(device="cpu"),
                          optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.0, epochs=1, batch_size=4,
                                            steps_per_epoch=steps))
        train(cfg, checkpoint_dir=root / name)
        specs.append(TeacherSpec.from_checkpoint(root / name, name))
    return specs


def _stage1(data: DataConfig, **kw) -> TrainConfig:
    values = dict(epochs=3, lr=2e-3, batch_size=6, patch_size=16, patches_per_image=4, aggregator_kwargs=AGGREGATOR,
                  runtime=RuntimeConfig(device="cpu"))
    return stage1_config(data, **{**values, **kw})


def _tables(task, specs, tmp_path: Path) -> dict[str, TeacherTable]:
    """The N whole-image tables as the teacher service stores them (computed here without Ray)."""
    whole = SRBatches(task.train_arrays, task.data, 0)
    store, tables = Store(tmp_path / "store"), {}
    for i, spec in enumerate(specs):
        net = spec.build(CPU)
        rows = [run_sr_teacher(net, whole.whole(j, CPU), ("image",), 4)["image"][0].numpy()
                for j in range(len(task.train_arrays))]
        tables[spec.name] = TeacherTable.save(store, f"{i:064x}", np.arange(len(rows)), {"image": rows},
                                              {"teacher": spec.name})
    return tables


def test_the_released_schedule_halves_at_40_and_80_percent_of_the_epochs():
    assert stage1_milestones(100) == [40, 80]  # 200k and 400k of 500k iterations
    assert stage1_milestones(10) == [4, 8] and stage1_milestones(1) == [1] and stage1_milestones(2) == [1, 2]
    cfg = stage1_config(DataConfig(task="sr"), epochs=5)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay) == ("adam", PAPER_LR,
                                                                                        (0.9, 0.999), 0.0)
    assert (cfg.optim.schedule, cfg.optim.batch_size, cfg.data.patch_size) == ("step", 16, 64)
    assert cfg.model == ModelConfig("mtkd_aggregator", {})


def test_train_aggregator_learns_with_adam_and_the_step_schedule(monkeypatch):
    made = {}
    adam = torch.optim.Adam

    def spy(params, **kwargs):
        made.update(kwargs)
        return adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 16, 16, generator=g)
    batches = [([hr + 0.1 * torch.randn(hr.shape, generator=g) for _ in range(3)], hr) for _ in range(2)]
    torch.manual_seed(0)
    model = create_model("mtkd_aggregator", num_teachers=3, scale=4, **AGGREGATOR)
    seen = []
    result = train_aggregator(model, batches, epochs=5, lr=1e-3, device="cpu",
                              progress=lambda e, loss, lr: seen.append((e, lr)))
    assert made["betas"] == (0.9, 0.999) and made["weight_decay"] == 0.0
    assert result["lrs"] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])  # milestones [2, 4]
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5] and result["steps"] == 10 and result["samples"] == 40
    assert result["epoch_losses"][-1] < result["epoch_losses"][0] and not model.training
    constant = train_aggregator(model, batches, epochs=2, lr=1e-3, device="cpu", schedule="constant")
    assert constant["lrs"] == [1e-3, 1e-3]
    with pytest.raises(ValueError, match="re-iterable"):
        train_aggregator(model, iter(batches), epochs=3, lr=1e-3, device="cpu")  # exhausted after one pass


def test_aligned_patches_cut_every_teacher_with_the_patch_box_and_draw_fresh_views(data, teachers, tmp_path):
    cfg = _stage1(data, steps_per_epoch=2)
    task = build_task(cfg.data, cfg.seed)
    tables = _tables(task, teachers, tmp_path)
    sources = []
    for spec in teachers:
        source = StoredTeacher(lambda epoch, t=tables[spec.name]: t, ("image",), scale=4)
        source.begin_epoch(0)
        sources.append(source)
    patches = AlignedPatches(task, sources, cfg, CPU)
    first, second = list(patches), list(patches)
    assert len(first) == 2 and len(first[0][0]) == 3  # steps_per_epoch caps the batches; one patch per teacher
    outputs, hr = first[0]
    assert hr.shape == (6, 3, 64, 64) and all(o.shape == hr.shape for o in outputs)
    # the same epoch-0 batch, rebuilt: every teacher patch is its whole-image output cut with the patch's box
    order = shard_order(len(task), seed=cfg.seed, epoch=0, rank=0, world_size=1)[:6]
    batch = task.batch(order, 0, CPU, ("lr",))
    torch.testing.assert_close(batch["hr"], hr)
    for spec, patch in zip(teachers, outputs):
        net = spec.build(CPU)
        for b in (0, 5):
            lr = torch.from_numpy(np.array(task.train_arrays.lr[int(batch["index"][b])])).permute(2, 0, 1)[None]
            with torch.no_grad():
                whole = net(lr.float() / 255)[0].numpy()
            crop = PatchViews.crop([whole], batch["box"][b:b + 1], 4, channels_last=False)
            expected = PatchViews.orient(torch.from_numpy(crop), batch["box"][b:b + 1])[0]
            torch.testing.assert_close(patch[b], expected, atol=1e-2, rtol=0)  # float16 rows
    assert not torch.equal(second[0][1], first[0][1])  # the next pass is the next epoch: new views


def test_train_stage1_writes_the_composite_teacher_and_its_heldout_table(data, teachers, tmp_path):
    cfg = _stage1(data)
    task = build_task(cfg.data, cfg.seed)
    files, meta = train_stage1(list(reversed(teachers)), cfg, task, _tables(task, teachers, tmp_path), name="agg")
    assert {"model.safetensors", "meta.json"} <= set(files)
    assert meta["teachers"] == ["edsr", "rcan", "srresnet"]  # name order, whatever order they came in
    assert set(meta["heldout"]) == {"edsr", "rcan", "srresnet", "agg"}
    assert len(meta["stage1"]["epoch_losses"]) == 3 and meta["stage1"]["lrs"] == pytest.approx([2e-3, 1e-3, 5e-4])
    out = tmp_path / "agg"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    result = Stage1Result.from_checkpoint(out, "mtkd")
    assert result.spec.name == "mtkd" and "mtkd" in result.heldout and "agg" not in result.heldout
    assert result.best_teacher == max(TEACHERS, key=lambda t: meta["heldout"][t]["val_psnr"])
    table = result.table()
    assert "| mtkd (aggregator) |" in table and f"vs best teacher ({result.best_teacher})" in table
    composite = result.spec.build(CPU)
    assert isinstance(composite, MTKDTeacher) and len(composite.teachers) == 3
    again = task.evaluate(composite, CPU)
    assert again["val_psnr"] == pytest.approx(meta["heldout"]["agg"]["val_psnr"], abs=1e-6)
    with pytest.raises(ValueError, match="also a teacher's name"):
        train_stage1(teachers, cfg, task, {}, name="edsr")
    with pytest.raises(KeyError, match="no whole-image table"):
        train_stage1(teachers, cfg, task, {}, name="agg")


def test_the_store_key_follows_teachers_aggregator_data_and_config_but_not_the_runtime(data, teachers):
    cfg = _stage1(data)
    key = stage1_document(teachers, cfg, "train", "val")
    assert stage1_document(list(reversed(teachers)), cfg, "train", "val") == key
    assert stage1_document(teachers, dataclasses.replace(cfg, runtime=RuntimeConfig(device="cuda")), "train",
                           "val") == key
    for other in (stage1_document(teachers[:2], cfg, "train", "val"), stage1_document(teachers, cfg, "other", "val"),
                  stage1_document(teachers, _stage1(data, lr=1e-4), "train", "val"),
                  stage1_document(teachers, _stage1(data, aggregator_kwargs={**AGGREGATOR, "embed_dim": 6}),
                                  "train", "val")):
        assert other != key


@pytest.mark.slow
def test_stage1_through_the_service_is_stored_reused_and_served_to_a_student(data, teachers, tmp_path):
    import ray

    from raykd.teachers.service import TeacherRequest, start_service
    from raykd.train.mtkd import prepare_mtkd_teacher
    from raykd.tune.sweep import decoded_splits

    started = ray.is_initialized()
    if not started:
        start_local_ray()
    try:
        cache = tmp_path / "cache"
        splits = decoded_splits(TrainConfig(data=data), str(cache))
        cfg = _stage1(data)
        result = prepare_mtkd_teacher(teachers, cfg, splits, cache_dir=cache, resources={"num_cpus": 1})
        assert not result.reused and Path(result.spec.checkpoint).parent == cache / "teachers"
        assert all(math.isfinite(v["val_psnr"]) for v in result.heldout.values())
        again = prepare_mtkd_teacher(teachers, cfg, splits, cache_dir=cache)
        assert again.reused and again.spec.checkpoint == result.spec.checkpoint and again.heldout == result.heldout

        # stage 2's service reads the best single teacher's table from the store stage 1 filled
        best = next(s for s in teachers if s.name == result.best_teacher)
        service = start_service([TeacherRequest(best, ("image",))], data, splits["train"], 1,
                                TeacherServiceConfig(mode="stored"), str(cache / "store"), "test-stage2")
        try:
            ray.get(service.start.remote([0]))
            ray.get(service.table.remote(best.name, 0, 0))
            stats = ray.get(service.statistics.remote())[best.name]
            assert (stats["tables_loaded"], stats["tables_built"]) == (1, 0)
        finally:
            ray.get(service.shutdown.remote())
            ray.kill(service)
    finally:
        if not started:
            ray.shutdown()

    student = TrainConfig(model=ModelConfig("edsr_baseline", {"n_resblocks": 1, "n_feats": 4}), data=data,
                          method=MethodConfig("mtkd"), teacher=TeacherConfig(result.spec.checkpoint),
                          optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.0, epochs=1, batch_size=4,
                                            steps_per_epoch=2), runtime=RuntimeConfig(device="cpu"))
    metrics = train(student)
    assert math.isfinite(metrics["val_psnr"]) and metrics["train_wavelet"] > 0 and metrics["train_l1"] > 0
