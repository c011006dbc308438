"""MTKD stage 1 (raykd/train/mtkd.py): the aggregator's optimisation and schedule, aligned (teacher patches, HR
patch) views, the composite checkpoint and its held-out table, resume after a kill and the non-finite stop of the
one training loop it runs through, the store key, and, with Ray, the whole stage:
teacher tables from the service, the aggregated teacher stored and reused, served to a student trained with mtkd.

The data is the built-in SR photo demo at x4 and every network has a handful of channels."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from conftest import start_local_ray
from raykd.config import (DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherConfig,
                          TeacherServiceConfig, TrainConfig)
from raykd.data.batches import SRBatches
from raykd.data.builtin import make_demo_sr
from raykd.data.store import Store
from raykd.data.views import PatchViews
from raykd.models.aggregator import MTKDTeacher
from raykd.teachers.sources import StoredTeacher, run_sr_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable
from raykd.models.checkpoint import MODEL_FILE, read_meta
from raykd.train.loop import NonFiniteLoss, shard_order, train
from raykd.train.mtkd import (PAPER_LR, AggregationTask, Stage1Result, stage1_config, stage1_document,
                              stage1_milestones, train_stage1)
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
    # a halving after the last epoch would change nothing: only those before it
    assert stage1_milestones(10) == [4, 8] and stage1_milestones(2) == [1] and stage1_milestones(1) == []
    cfg = stage1_config(DataConfig(task="sr"), epochs=5)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay) == ("adam", PAPER_LR,
                                                                                        (0.9, 0.999), 0.0)
    assert (cfg.optim.schedule, cfg.optim.milestones, cfg.optim.gamma) == ("multistep", (2, 4), 0.5)
    assert (cfg.optim.batch_size, cfg.data.patch_size) == (16, 64)
    assert cfg.model == ModelConfig("mtkd_aggregator", {}) and cfg.method.name == "none"  # L1 to the ground truth
    assert stage1_config(DataConfig(task="sr"), epochs=1).optim.schedule == "constant"
    assert stage1_config(DataConfig(task="sr"), epochs=5, schedule="cosine").optim.schedule == "cosine"
    with pytest.raises(ValueError, match="stage-1 schedule 'linear'"):
        stage1_config(DataConfig(task="sr"), epochs=5, schedule="linear")


def _sources(tables, specs) -> list[StoredTeacher]:
    sources = []
    for spec in specs:
        source = StoredTeacher(lambda epoch, t=tables[spec.name]: t, ("image",), scale=4)
        source.begin_epoch(0)
        sources.append(source)
    return sources


def test_aggregation_batches_cut_every_teacher_with_the_patch_box_and_draw_fresh_views(data, teachers, tmp_path):
    cfg = _stage1(data, steps_per_epoch=2)
    task = build_task(cfg.data, cfg.seed)
    stage = AggregationTask(task, _sources(_tables(task, teachers, tmp_path), teachers), [])
    assert stage.model_kwargs() == {"num_teachers": 3, "scale": 4} and stage.model_input == "teachers"
    order = shard_order(len(task), seed=cfg.seed, epoch=0, rank=0, world_size=1)[:6]
    first, second = stage.batch(order, 0, CPU, ("teachers",)), stage.batch(order, 1, CPU, ("teachers",))
    hr = first["hr"]
    assert hr.shape == (6, 3, 64, 64) and first["teachers"].shape == (6, 9, 64, 64)  # 3 channels per teacher
    batch = task.batch(order, 0, CPU, ("lr",))  # the task's own epoch-0 patches
    torch.testing.assert_close(batch["hr"], hr)
    # every teacher patch is its whole-image output cut with the patch's box, in teacher-name order
    for t, spec in enumerate(teachers):
        net = spec.build(CPU)
        for b in (0, 5):
            lr = torch.from_numpy(np.array(task.train_arrays.lr[int(batch["index"][b])])).permute(2, 0, 1)[None]
            with torch.no_grad():
                whole = net(lr.float() / 255)[0].numpy()
            crop = PatchViews.crop([whole], batch["box"][b:b + 1], 4, channels_last=False)
            expected = PatchViews.orient(torch.from_numpy(crop), batch["box"][b:b + 1])[0]
            torch.testing.assert_close(first["teachers"][b, 3 * t:3 * t + 3], expected, atol=1e-2, rtol=0)
    assert not torch.equal(second["hr"], hr)  # the next epoch: new views


def test_stage1_trains_with_adam_and_the_released_halving_through_the_loop(data, teachers, tmp_path, monkeypatch):
    made = {}
    adam = torch.optim.Adam

    def spy(groups, **kwargs):
        made.update(kwargs, weight_decay=[g["weight_decay"] for g in groups])
        return adam(groups, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    cfg = _stage1(data, epochs=5, patches_per_image=8)
    task = build_task(cfg.data, cfg.seed)
    reports = []
    train_stage1(teachers, cfg, task, _tables(task, teachers, tmp_path), name="agg",
                 report=lambda metrics, checkpoint: reports.append((metrics, checkpoint)))
    assert made["betas"] == (0.9, 0.999) and set(made["weight_decay"]) == {0.0} and made["lr"] == 2e-3
    assert [m["epoch"] for m, _ in reports] == [1, 2, 3, 4, 5] and all(c is not None for _, c in reports)
    # the rate the next epoch trains at: halved after epochs 2 and 4 (40% and 80% of 5)
    assert [m["lr"] for m, _ in reports] == pytest.approx([2e-3, 1e-3, 1e-3, 5e-4, 5e-4])
    assert reports[-1][0]["train_l1"] < reports[0][0]["train_l1"]
    assert all(math.isfinite(m["val_psnr"]) for m, _ in reports)


def test_train_stage1_writes_the_composite_teacher_and_its_heldout_table(data, teachers, tmp_path):
    cfg = _stage1(data)
    task = build_task(cfg.data, cfg.seed)
    files, meta = train_stage1(list(reversed(teachers)), cfg, task, _tables(task, teachers, tmp_path), name="agg")
    assert {"model.safetensors", "meta.json"} <= set(files)
    assert meta["teachers"] == ["edsr", "rcan", "srresnet"]  # name order, whatever order they came in
    assert set(meta["heldout"]) == {"edsr", "rcan", "srresnet", "agg"}
    for spec in teachers:  # each teacher's own held-out score, as the sweep measures any SR model
        assert meta["heldout"][spec.name] == pytest.approx(task.evaluate(spec.build(CPU), CPU))
    assert meta["stage1"]["epochs"] == 3 and math.isfinite(meta["stage1"]["loss"])
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
    # the loop validated the aggregator on the teachers' stored val images: the composite's score, untiled
    assert meta["stage1"]["val_psnr"] == pytest.approx(again["val_psnr"], abs=0.05)
    with pytest.raises(ValueError, match="also a teacher's name"):
        train_stage1(teachers, cfg, task, {}, name="edsr")
    with pytest.raises(KeyError, match="no whole-image table"):
        train_stage1(teachers, cfg, task, {}, name="agg")


class Killed(Exception):
    """The driver dies after an epoch's checkpoint is written."""


def test_a_killed_stage1_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_run(data, teachers, tmp_path):
    cfg = _stage1(data, epochs=4)
    task = build_task(cfg.data, cfg.seed)
    tables = _tables(task, teachers, tmp_path)
    straight, _ = train_stage1(teachers, cfg, task, tables, checkpoint_dir=tmp_path / "a")

    def kill_after_epoch_2(metrics, checkpoint):
        if metrics["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_stage1(teachers, cfg, task, tables, checkpoint_dir=tmp_path / "b", report=kill_after_epoch_2)
    assert read_meta(tmp_path / "b")["epoch"] == 2
    epochs = []
    resumed, meta = train_stage1(teachers, cfg, task, tables, checkpoint_dir=tmp_path / "b",
                                 report=lambda metrics, _: epochs.append(metrics["epoch"]))
    assert epochs == [3, 4]  # the rerun starts at epoch 3, not at epoch 1
    a = {k: v for k, v in load(straight[MODEL_FILE]).items() if k.startswith("aggregator.")}
    b = load(resumed[MODEL_FILE])
    assert a and all(torch.equal(a[k], b[k]) for k in a)  # the same aggregator as the uninterrupted run's
    assert meta["heldout"] == json.loads(straight["meta.json"])["heldout"]


def test_a_non_finite_stage1_loss_stops_it_before_saving(data, teachers, tmp_path):
    cfg = _stage1(data, lr=1e30)  # Adam's first steps throw the weights to 1e30: the L1 overflows
    task = build_task(cfg.data, cfg.seed)
    with pytest.raises(NonFiniteLoss, match="training loss is (nan|inf) at epoch 1"):
        train_stage1(teachers, cfg, task, _tables(task, teachers, tmp_path), checkpoint_dir=tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


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
