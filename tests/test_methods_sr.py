"""SR distillation methods (none, l1kd, mtkd): registry, loss terms, and where gradients go."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raykd.losses.sr import mtkd_loss, wavelet_loss
from raykd.methods import create_method, method_class
from raykd.registry import METHODS
from raykd.models import create_model
from raykd.models.aggregator import KnowledgeAggregator
from raykd.models.features import capture, output_shapes

EXPECTED = {
    "none": ({}, {"l1"}, ()),
    "l1kd": ({"w_gt": 1.0, "w_kd": 1.0}, {"l1", "kd"}, ("image",)),
    "mtkd": ({"alpha": 0.1, "levels": 1, "wavelet": "haar"}, {"l1", "wavelet"}, ("image",)),
}


def _images(seed: int, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 16, 16, generator=g) for _ in range(n)]


def test_sr_methods_are_registered_for_task_sr_with_paper_defaults() -> None:
    assert set(EXPECTED) <= set(METHODS.names("sr"))
    assert "l1kd" not in METHODS.names("cls") and "mtkd" not in METHODS.names("cls")
    for name, (defaults, terms, teacher) in EXPECTED.items():
        assert method_class(name, "sr").defaults() == defaults
        method = create_method(name, task="sr")
        assert (method.task, method.student_input) == ("sr", "lr")
        assert method.params == defaults
        assert method.student_outputs() == ()  # the SR image, "image", is the model's own output
        assert method.teacher_outputs() == teacher
        stu, tea, hr = _images(0)
        losses = method({"image": stu}, {"image": tea} if teacher else {}, hr, epoch=1)
        assert set(losses) == terms
        assert all(v.dim() == 0 for v in losses.values())
    # the SR "none" is not the classification one (which would ask for a cross-entropy target)
    assert type(create_method("none", task="sr")) is not type(create_method("none"))


def test_loss_terms_follow_their_formulas() -> None:
    stu, tea, hr = _images(1)
    assert create_method("none", task="sr")({"image": stu}, {}, hr, 1)["l1"].item() == pytest.approx(
        (stu - hr).abs().mean().item())
    l1kd = create_method("l1kd", "sr", {"w_gt": 0.5, "w_kd": 2.0})({"image": stu}, {"image": tea}, hr, 1)
    assert l1kd["l1"].item() == pytest.approx(0.5 * (stu - hr).abs().mean().item())
    assert l1kd["kd"].item() == pytest.approx(2.0 * (stu - tea).abs().mean().item())
    mtkd = create_method("mtkd", "sr", {"alpha": 0.2, "levels": 2, "wavelet": "db2"})({"image": stu}, {"image": tea},
                                                                                    hr, 1)
    assert mtkd["l1"].item() == pytest.approx(0.2 * F.l1_loss(stu, hr).item())
    assert mtkd["wavelet"].item() == pytest.approx(wavelet_loss(stu, tea, levels=2, wavelet="db2").item())
    assert (mtkd["l1"] + mtkd["wavelet"]).item() == pytest.approx(
        mtkd_loss(stu, tea, hr, alpha=0.2, levels=2, wavelet="db2").item())


def test_mtkd_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"'mtkd': unknown parameter\(s\) \['w_kd'\]"):
        create_method("mtkd", "sr", {"w_kd": 1.0})
    with pytest.raises(ValueError, match="'mtkd': levels=0 is invalid; expected an integer >= 1"):
        create_method("mtkd", "sr", {"levels": 0})
    with pytest.raises(ValueError, match="'mtkd': alpha=-1.0 is invalid"):
        create_method("mtkd", "sr", {"alpha": -1.0})
    with pytest.raises(ValueError, match="'mtkd': wavelet='nope' is invalid"):
        create_method("mtkd", "sr", {"wavelet": "nope"})
    with pytest.raises(KeyError, match="unknown sr method 'kd'"):  # a cls method is not an SR one
        create_method("kd", "sr")


def test_bind_requires_matching_sr_image_shapes() -> None:
    method = create_method("l1kd", task="sr")
    method.bind({"image": (3, 32, 32)}, {"image": (3, 32, 32)})
    with pytest.raises(ValueError, match="shapes must match"):
        method.bind({"image": (3, 32, 32)}, {"image": (3, 64, 64)})
    with pytest.raises(ValueError, match="teacher provided no 'image'"):
        create_method("mtkd", task="sr").bind({"image": (3, 32, 32)}, {})
    create_method("none", task="sr").bind({"image": (3, 32, 32)}, {})  # no teacher, nothing to match


@pytest.mark.parametrize("name", ["l1kd", "mtkd"])
def test_gradients_reach_only_the_student_through_the_trainer_convention(name: str) -> None:
    """As the trainer does: capture(..., output="image") gives each SR image under "image"; the teacher side here
    is built with gradients enabled (for mtkd: three teachers and the aggregator) to show none flows back to it."""
    torch.manual_seed(0)
    student = create_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    teachers = [create_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8) for _ in range(3)]
    aggregator = KnowledgeAggregator(3, scale=2, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    method = create_method(name, task="sr")
    method.bind(output_shapes(student, method.student_outputs(), (3, 8, 8), output="image"),
                output_shapes(teachers[0], method.teacher_outputs(), (3, 8, 8), output="image"))

    student_out = capture(student, lr, method.student_outputs(), output="image")
    teacher_outs = [capture(t, lr, method.teacher_outputs(), output="image") for t in teachers]
    if name == "mtkd":
        teacher_out = {"image": aggregator([out["image"] for out in teacher_outs])}
    else:
        teacher_out = teacher_outs[0]
    assert set(student_out) == set(teacher_out) == {"image"}
    assert student_out["image"].shape == teacher_out["image"].shape == hr.shape
    sum(method(student_out, teacher_out, hr, epoch=1).values()).backward()

    assert all(p.grad is not None for p in student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    for frozen in (*teachers, aggregator):
        assert all(p.grad is None for p in frozen.parameters())
