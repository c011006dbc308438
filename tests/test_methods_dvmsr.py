"""DVMSR distillation (raykd/methods/dvmsr.py) on v2: the loss in both positions (defaults: the paper's "set 1"),
where gradients go, distillation steps that learn, LR-resolution teacher features served from whole-image tables,
end-to-end training, and the DVMSR teacher trained and served whole-image outputs by the teacher service."""
from __future__ import annotations

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
from raykd.methods import create_method, method_class
from raykd.models import create_model
from raykd.models.features import capture
from raykd.registry import METHODS
from raykd.teachers.sources import StoredTeacher, run_sr_teacher
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.store import TeacherTable
from raykd.train.loop import train
from raykd.train.tasks import build_task

CPU = torch.device("cpu")
STUDENT = {"embed_dim": 8, "depths": (1,), "d_state": 4}  # "body": 8 channels
TEACHER = {"embed_dim": 12, "depths": (1, 1), "d_state": 4}  # "body": 12 channels


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")


def _pair(scale: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("dvmsr", scale=scale, **STUDENT), create_model("dvmsr_teacher", scale=scale, **TEACHER)


def _cfg(demo: Path, model: str, kwargs: dict, **kw) -> TrainConfig:
    data = DataConfig(task="sr", dataset="demo_sr", root=str(demo), scale=2, patch_size=16)
    return TrainConfig(model=ModelConfig(model, kwargs), data=data,
                       optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.0, epochs=1, batch_size=2,
                                         steps_per_epoch=2), runtime=RuntimeConfig(device="cpu"), **kw)


def test_registered_for_sr_with_the_papers_set_1_and_outputs_that_follow_the_position() -> None:
    assert "dvmsr" in METHODS.names("sr") and "dvmsr" not in METHODS.names("cls")
    assert method_class("dvmsr", "sr").defaults() == {"w_gt": 1.0, "w_kd": 1.0, "position": "output"}
    out = create_method("dvmsr", "sr")
    assert (out.task, out.student_input) == ("sr", "lr")
    assert (out.teacher_outputs(), out.student_outputs()) == (("image",), ("image",))
    feat = create_method("dvmsr", "sr", {"position": "feature"})
    assert (feat.teacher_outputs(), feat.student_outputs()) == (("body",), ("body",))
    assert set(method_class("dvmsr", "sr").search_space()) == {"w_gt", "w_kd", "position"}
    with pytest.raises(ValueError, match="position='middle'"):
        create_method("dvmsr", "sr", {"position": "middle"})
    with pytest.raises(ValueError, match="w_kd=-1.0"):
        create_method("dvmsr", "sr", {"w_kd": -1.0})


def test_output_position_loss_is_the_weighted_l1_pair() -> None:
    g = torch.Generator().manual_seed(1)
    stu, tea, hr = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    method = create_method("dvmsr", "sr", {"w_gt": 0.3, "w_kd": 2.5})
    method.bind({"image": (3, 8, 8)}, {"image": (3, 8, 8)})
    losses = method({"image": stu}, {"image": tea.half()}, hr, 1)  # stored teacher rows may be float16
    assert set(losses) == {"l1", "kd"}
    assert losses["l1"].item() == pytest.approx(0.3 * (stu - hr).abs().mean().item(), rel=1e-6)
    assert losses["kd"].item() == pytest.approx(2.5 * (stu - tea.half().float()).abs().mean().item(), rel=1e-6)
    assert list(method.parameters()) == []  # nothing learned besides the student at the end level
    with pytest.raises(ValueError, match="shapes must match"):
        method.bind({"image": (3, 8, 8)}, {"image": (3, 16, 16)})


def test_feature_position_projects_the_student_body_with_a_1x1_conv() -> None:
    g = torch.Generator().manual_seed(2)
    stu, hr = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    body_s, body_t = torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 10, 4, 4, generator=g)
    method = create_method("dvmsr", "sr", {"position": "feature", "w_gt": 0.5, "w_kd": 4.0})
    with pytest.raises(RuntimeError, match="bind"):
        method({"image": stu, "body": body_s}, {"body": body_t}, hr, 1)
    method.bind({"image": (3, 8, 8), "body": (6, 4, 4)}, {"body": (10, 4, 4)})
    losses = method({"image": stu, "body": body_s}, {"body": body_t}, hr, 1)
    weight = method.proj.weight.detach()[:, :, 0, 0].numpy().astype(np.float64)  # (10, 6)
    bias = method.proj.bias.detach().numpy().astype(np.float64)
    projected = np.einsum("oc,bchw->bohw", weight, body_s.numpy().astype(np.float64)) + bias[None, :, None, None]
    assert losses["kd"].item() == pytest.approx(4.0 * np.abs(projected - body_t.numpy()).mean(), rel=1e-5)
    assert losses["l1"].item() == pytest.approx(0.5 * np.abs(stu.numpy() - hr.numpy()).mean(), rel=1e-6)
    with pytest.raises(ValueError, match="same h x w"):
        method.bind({"image": (3, 8, 8), "body": (6, 4, 4)}, {"body": (10, 8, 8)})
    with pytest.raises(ValueError, match="teacher provided no 'body'"):
        method.bind({"image": (3, 8, 8), "body": (6, 4, 4)}, {"image": (3, 8, 8)})


@pytest.mark.parametrize("position", ["output", "feature"])
def test_gradients_reach_the_student_and_projection_only(position: str) -> None:
    student, teacher = _pair()
    method = create_method("dvmsr", "sr", {"position": position})
    x, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    # the teacher runs with autograd on, so only the method's detaching keeps gradients out of it
    t_out = capture(teacher, x, method.teacher_outputs(), "image")
    s_out = capture(student, x, method.student_outputs(), "image")
    method.bind({k: tuple(v.shape[1:]) for k, v in s_out.items()}, {k: tuple(v.shape[1:]) for k, v in t_out.items()})
    sum(method(s_out, t_out, hr, 1).values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv_first.weight.grad is not None and student.conv_first.weight.grad.abs().sum() > 0
    if position == "feature":
        assert method.proj.weight.shape == (TEACHER["embed_dim"], STUDENT["embed_dim"], 1, 1)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())


@pytest.mark.parametrize("position", ["output", "feature"])
def test_distillation_steps_reduce_the_loss(position: str) -> None:
    student, teacher = _pair(seed=3)
    teacher.eval().requires_grad_(False)
    method = create_method("dvmsr", "sr", {"position": position})
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 3, 8, 8, generator=g)
    hr = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        t_out = capture(teacher, x, method.teacher_outputs(), "image")
    method.bind({k: tuple(v.shape[1:]) for k, v in capture(student, x, method.student_outputs(), "image").items()},
                {k: tuple(v.shape[1:]) for k, v in t_out.items()})
    opt = torch.optim.Adam([*student.parameters(), *method.parameters()], lr=3e-3)
    history = []
    for _ in range(15):
        losses = method(capture(student, x, method.student_outputs(), "image"), t_out, hr, 1)
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    for term in ("l1", "kd"):
        assert history[-1][term] < 0.8 * history[0][term], (term, history[0], history[-1])


def test_stored_lr_resolution_features_are_cut_with_the_lr_box(demo: Path, tmp_path: Path) -> None:
    """The SR image of a whole-image row is cut at x scale, the LR-sized "body" feature at x1, both oriented like
    the patch: what the teacher service's table serves to a feature-position trial."""
    data = DataConfig(task="sr", dataset="demo_sr", root=str(demo), scale=4, patch_size=12)
    task = build_task(data, seed=0)
    teacher = create_model("dvmsr_teacher", scale=4, **TEACHER).eval().requires_grad_(False)
    names = ("body", "image")
    whole = SRBatches(task.train_arrays, data, 0)
    rows = [run_sr_teacher(teacher, whole.whole(i, CPU), names, 4) for i in range(len(task.train_arrays))]
    table = TeacherTable.save(Store(tmp_path), "d" * 64, np.arange(len(rows)),
                              {n: [r[n][0].numpy() for r in rows] for n in names}, {"teacher": "dvmsr_teacher"})
    source = StoredTeacher(lambda epoch: table, names, scale=4)
    source.begin_epoch(1)
    batch = task.batch(np.arange(len(task)), 1, CPU, ("lr",))
    got = source.request(batch)()
    assert got["body"].shape == (len(task), TEACHER["embed_dim"], 12, 12)
    assert got["image"].shape == batch["hr"].shape
    for b in range(len(task)):
        row = rows[int(batch["index"][b])]
        for name, scale in (("body", 1), ("image", 4)):
            crop = PatchViews.crop([row[name][0].numpy()], batch["box"][b:b + 1], scale, channels_last=False)
            expected = PatchViews.orient(torch.from_numpy(crop), batch["box"][b:b + 1])[0]
            torch.testing.assert_close(got[name][b], expected, atol=1e-2, rtol=1e-2)  # float16 rows


def test_train_distils_from_a_teacher_trained_by_train(demo: Path, tmp_path: Path) -> None:
    teacher_run = train(_cfg(demo, "dvmsr_teacher", TEACHER), checkpoint_dir=tmp_path / "teacher")
    assert math.isfinite(teacher_run["val_psnr"])
    for position in ("output", "feature"):
        cfg = _cfg(demo, "dvmsr", STUDENT, method=MethodConfig("dvmsr", {"position": position}),
                   teacher=TeacherConfig(str(tmp_path / "teacher")))
        metrics = train(cfg, checkpoint_dir=tmp_path / f"student-{position}")
        assert math.isfinite(metrics["val_psnr"]) and 0 < metrics["val_ssim"] <= 1
        assert metrics["train_kd"] > 0 and metrics["train_l1"] > 0
        assert metrics["teacher_samples_computed"] == 4  # two steps of two patches, in-process


@pytest.mark.slow
def test_dvmsr_teacher_trains_and_the_service_serves_its_whole_image_outputs(demo: Path, tmp_path: Path) -> None:
    """A tiny DVMSR teacher trained by ``train`` and served by the teacher service: one whole-image row per
    training image with the SR image and the LR-sized body feature, then crops of both per patch."""
    import ray

    from raykd.teachers.service import ServiceClient, TeacherRequest, start_service

    cfg = _cfg(demo, "dvmsr_teacher", TEACHER)
    train(cfg, checkpoint_dir=tmp_path / "teacher")
    spec = TeacherSpec.from_checkpoint(tmp_path / "teacher", "dvmsr_teacher")
    assert spec.model_kwargs["vimm_residual"] is False  # the released variant, recorded in the checkpoint
    started = ray.is_initialized()
    if not started:
        start_local_ray()
    try:
        task = build_task(cfg.data, cfg.seed)
        arrays = ray.put(task.train_arrays)
        outputs = ("body", "image")
        service = start_service([TeacherRequest(spec, outputs)], cfg.data, arrays, 1,
                                TeacherServiceConfig(mode="stored"), str(tmp_path / "store"), "test-dvmsr")
        try:
            ray.get(service.start.remote([0]))
            table = ray.get(ray.get(service.table.remote("dvmsr_teacher", 0, 0))[0])
            assert table.num_rows == len(task.train_arrays) and set(table.outputs) == set(outputs)
            rows = table.lookup(np.arange(table.num_rows))
            for i in range(table.num_rows):
                h, w = task.train_arrays.lr.shapes[i][:2]
                assert rows["image"][i].shape == (3, 2 * h, 2 * w)
                assert rows["body"][i].shape == (TEACHER["embed_dim"], h, w)
            source = ServiceClient(service, "dvmsr_teacher", outputs).source("sr", 2, 0)
            source.begin_epoch(0)
            batch = task.batch(np.arange(4), 0, CPU, ("lr",))
            served = source.request(batch)()
            assert served["image"].shape == (4, 3, 32, 32) and served["body"].shape == (4, TEACHER["embed_dim"], 16, 16)
            assert ray.get(service.statistics.remote())["dvmsr_teacher"]["tables_built"] == 1
        finally:
            ray.get(service.shutdown.remote())
            ray.kill(service)
    finally:
        if not started:
            ray.shutdown()
