"""DVMSR distillation (raykd/methods/dvmsr.py): the loss in both positions, where gradients go, distillation
steps that learn, LR-resolution teacher features served from the SR cache, and end-to-end training."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from raykd.data.builtin import make_demo_sr
from raykd.data.sr import PatchView, apply_view, to_tensor
from raykd.methods import create_method, list_methods, method_defaults
from raykd.models import create_model
from raykd.models.features import capture
from raykd.teachers.cache import TeacherCache
from raykd.train.config import TrainConfig
from raykd.train.loop import train
from raykd.train.sr_task import SRTask

STUDENT = {"embed_dim": 8, "depths": (1,), "d_state": 4}  # "body": 8 channels
TEACHER = {"embed_dim": 12, "depths": (1, 1), "d_state": 4}  # "body": 12 channels


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")


def _pair(scale: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    student = create_model("dvmsr", scale=scale, **STUDENT)
    teacher = create_model("dvmsr_teacher", scale=scale, **TEACHER)
    return student, teacher


def test_registered_for_sr_with_outputs_that_follow_the_position() -> None:
    assert "dvmsr" in list_methods("sr") and "dvmsr" not in list_methods("cls")
    assert method_defaults("dvmsr", "sr") == {"w_gt": 1.0, "w_kd": 1.0, "position": "output"}
    out = create_method("dvmsr", "sr")
    assert (out.task, out.student_input) == ("sr", "lr")
    assert (out.teacher_outputs(), out.student_outputs()) == (("logits",), ("logits",))
    feat = create_method("dvmsr", "sr", position="feature")
    assert (feat.teacher_outputs(), feat.student_outputs()) == (("body",), ("logits", "body"))
    with pytest.raises(ValueError, match="position 'middle'"):
        create_method("dvmsr", "sr", position="middle")
    with pytest.raises(ValueError, match="w_kd must be a number >= 0"):
        create_method("dvmsr", "sr", w_kd=-1.0)


def test_output_position_loss_is_the_weighted_l1_pair() -> None:
    g = torch.Generator().manual_seed(1)
    stu, tea, hr = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    method = create_method("dvmsr", "sr", w_gt=0.3, w_kd=2.5)
    method.bind({"logits": (3, 8, 8)}, {"logits": (3, 8, 8)})
    losses = method({"logits": stu}, {"logits": tea.half()}, hr, 1)
    assert set(losses) == {"l1", "kd"}
    assert losses["l1"].item() == pytest.approx(0.3 * (stu - hr).abs().mean().item(), rel=1e-6)
    assert losses["kd"].item() == pytest.approx(2.5 * (stu - tea.half().float()).abs().mean().item(), rel=1e-6)
    assert list(method.parameters()) == []  # nothing learned besides the student at the end level
    with pytest.raises(ValueError, match="shapes must match"):
        method.bind({"logits": (3, 8, 8)}, {"logits": (3, 16, 16)})


def test_feature_position_projects_the_student_body_with_a_1x1_conv() -> None:
    g = torch.Generator().manual_seed(2)
    stu, hr = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    body_s, body_t = torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 10, 4, 4, generator=g)
    method = create_method("dvmsr", "sr", position="feature", w_gt=0.5, w_kd=4.0)
    with pytest.raises(RuntimeError, match="bind"):
        method({"logits": stu, "body": body_s}, {"body": body_t}, hr, 1)
    method.bind({"logits": (3, 8, 8), "body": (6, 4, 4)}, {"body": (10, 4, 4)})
    losses = method({"logits": stu, "body": body_s}, {"body": body_t}, hr, 1)
    weight = method.proj.weight.detach()[:, :, 0, 0].numpy().astype(np.float64)  # (10, 6)
    bias = method.proj.bias.detach().numpy().astype(np.float64)
    projected = np.einsum("oc,bchw->bohw", weight, body_s.numpy().astype(np.float64)) + bias[None, :, None, None]
    assert losses["kd"].item() == pytest.approx(4.0 * np.abs(projected - body_t.numpy()).mean(), rel=1e-5)
    assert losses["l1"].item() == pytest.approx(0.5 * np.abs(stu.numpy() - hr.numpy()).mean(), rel=1e-6)
    with pytest.raises(ValueError, match="same h x w"):
        method.bind({"logits": (3, 8, 8), "body": (6, 4, 4)}, {"body": (10, 8, 8)})
    with pytest.raises(ValueError, match="teacher provided no 'body'"):
        method.bind({"logits": (3, 8, 8), "body": (6, 4, 4)}, {"logits": (3, 8, 8)})


@pytest.mark.parametrize("position", ["output", "feature"])
def test_gradients_reach_the_student_and_projection_only(position: str) -> None:
    student, teacher = _pair()
    method = create_method("dvmsr", "sr", position=position)
    x, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    # the teacher runs with autograd on, so only the method's detaching keeps gradients out of it
    t_out = capture(teacher, x, method.teacher_outputs())
    s_out = capture(student, x, method.student_outputs())
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
    method = create_method("dvmsr", "sr", position=position)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 3, 8, 8, generator=g)
    hr = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        t_out = capture(teacher, x, method.teacher_outputs())
    method.bind({k: tuple(v.shape[1:]) for k, v in capture(student, x, method.student_outputs()).items()},
                {k: tuple(v.shape[1:]) for k, v in t_out.items()})
    opt = torch.optim.Adam([*student.parameters(), *method.parameters()], lr=3e-3)
    history = []
    for _ in range(15):
        losses = method(capture(student, x, method.student_outputs()), t_out, hr, 1)
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    for term in ("l1", "kd"):
        assert history[-1][term] < 0.8 * history[0][term], (term, history[0], history[-1])


def test_cached_lr_resolution_features_are_cropped_with_the_lr_box(demo: Path, tmp_path: Path) -> None:
    """SR image rows crop at x scale, rows the size of the LR image (DVMSR's "body") at x1, from one entry."""
    cfg = TrainConfig.from_dict({"task": "sr", "data": "demo_sr", "data_root": str(demo), "scale": 4,
                                 "patch_size": 12, "check_data": False})
    task = SRTask(cfg)
    teacher = create_model("dvmsr_teacher", scale=4, **TEACHER).eval()
    names = ["body", "logits"]
    with torch.no_grad():  # the whole-image outputs, straight from the model
        wholes = {i: teacher.extract(to_tensor(task.train.base.pair(i)[0])[None], names)
                  for i in range(len(task.train.base))}
    batches = list(task.teacher_batches(list(range(len(task.train))), 1))
    rows = [task.teacher_forward(teacher, b["input"], names) for b in batches]
    entry = TeacherCache(tmp_path).save(
        "b" * 64, np.concatenate([b["index"] for b in batches]), np.zeros(len(batches), np.int64),
        {name: [r[name][0].numpy() for r in rows] for name in names})
    source = task.cached_teacher(entry, names)

    task.train.set_epoch(1)
    batch = default_collate([task.train[i] for i in range(len(task.train))])
    got = source.request(batch)()
    assert got["body"].shape == (len(task.train), TEACHER["embed_dim"], 12, 12)
    assert got["logits"].shape == batch["hr"].shape
    for b in range(len(task.train)):
        whole = wholes[int(batch["index"][b])]
        view = PatchView.from_box(batch["box"][b])
        assert torch.allclose(got["body"][b], apply_view(whole["body"][0], view, 1), atol=1e-4)
        assert torch.allclose(got["logits"][b], apply_view(whole["logits"][0], view, 4), atol=1e-4)


def test_train_distils_from_a_teacher_trained_by_train(demo: Path, tmp_path: Path) -> None:
    common = {"task": "sr", "data": "demo_sr", "data_root": str(demo), "scale": 2, "patch_size": 16,
              "batch_size": 2, "steps_per_epoch": 2, "epochs": 1, "optimizer": "adam", "lr": 2e-3,
              "device": "cpu", "check_data": False, "tile": 0}
    teacher_run = train({**common, "model": "dvmsr_teacher", "model_kwargs": TEACHER, "method": "none"},
                        checkpoint_dir=tmp_path / "teacher")
    assert math.isfinite(teacher_run["val_psnr"])

    student = {**common, "model": "dvmsr", "model_kwargs": STUDENT, "method": "dvmsr",
               "teacher": str(tmp_path / "teacher")}
    for position in ("output", "feature"):
        metrics = train({**student, "method_params": {"position": position}},
                        checkpoint_dir=tmp_path / f"student-{position}")
        assert math.isfinite(metrics["val_psnr"]) and 0 < metrics["val_ssim"] <= 1
        assert metrics["train_kd"] > 0 and metrics["train_l1"] > 0
        assert metrics["best_val_psnr"] == metrics["val_psnr"]
