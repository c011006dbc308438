"""FAKD (He et al., ICIP 2020) and AT for SR (MTKD's baselines): the spatial-affinity loss against a hand
computation, the ``fakd`` and ``at`` SR methods' terms and checks, the SR networks' three feature points, and
in-process distillation runs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from raykd.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherConfig, TrainConfig
from raykd.data.builtin import make_demo_sr
from raykd.losses.sr import affinity_loss, spatial_affinity
from raykd.methods import create_method, method_class
from raykd.models import create_model
from raykd.models.features import output_shapes
from raykd.train.loop import train

STAGES = ("stage:0", "stage:1", "stage:2")
TINY = {  # a few channels per SR family, so that a forward takes milliseconds
    "edsr_baseline": {"n_resblocks": 3, "n_feats": 8},
    "edsr": {"n_resblocks": 2, "n_feats": 12},
    "rcan_light": {"n_resgroups": 2, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    "swinir_light": {"embed_dim": 12, "depths": (1, 1, 1), "num_heads": (2, 2, 2), "window_size": 4, "img_size": 16},
}


def _hand_affinity(fm: list[list[list[float]]], eps: float = 1e-7) -> list[list[float]]:
    """``A[i][j]`` = cosine similarity of positions i, j (row-major) of one ``C x H x W`` map, by loops."""
    c, h, w = len(fm), len(fm[0]), len(fm[0][0])
    vectors = [[fm[k][y][x] for k in range(c)] for y in range(h) for x in range(w)]
    units = []
    for v in vectors:
        norm = math.sqrt(sum(a * a for a in v)) + eps
        units.append([a / norm for a in v])
    return [[sum(a * b for a, b in zip(u, v)) for v in units] for u in units]


def test_spatial_affinity_and_loss_match_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 3, 2, 3, generator=g), torch.randn(2, 2, 3, 2, generator=g)]
    teacher = [torch.randn(2, 5, 2, 3, generator=g), torch.randn(2, 4, 3, 2, generator=g)]  # wider than the student
    expected = 0.0
    for s, t in zip(student, teacher):
        diffs = []
        for b in range(2):
            a_s, a_t = _hand_affinity(s[b].tolist()), _hand_affinity(t[b].tolist())
            torch.testing.assert_close(spatial_affinity(s)[b], torch.tensor(a_s), rtol=1e-5, atol=1e-6)
            diffs += [abs(x - y) for row_s, row_t in zip(a_s, a_t) for x, y in zip(row_s, row_t)]
        expected += sum(diffs) / len(diffs)  # mean over B * HW * HW entries, summed over the layers
    assert affinity_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_affinity_ignores_per_position_scale_and_width_but_not_structure() -> None:
    g = torch.Generator().manual_seed(1)
    fm = torch.randn(2, 4, 3, 3, generator=g)
    scaled = fm * torch.rand(2, 1, 3, 3, generator=g).add(0.5)  # every position's vector rescaled
    assert affinity_loss([scaled], [fm]).item() == pytest.approx(0.0, abs=1e-6)
    assert affinity_loss([fm], [torch.cat([fm, fm], 1)]).item() == pytest.approx(0.0, abs=1e-6)
    assert affinity_loss([fm.flip(-1)], [fm]).item() > 0.01
    with pytest.raises(ValueError, match="same B, H and W"):
        affinity_loss([fm], [fm[..., :2]])


def _feature_kd_terms(name: str, params: dict, seed: int):
    """``name``'s terms on random student (width 4) and teacher (width 6) stage maps and SR images, its GT and
    teacher-image terms checked against FAKD's ``(1 - alpha)`` / ``alpha`` frame; returns the method, both output
    dicts (every tensor requiring grad) and the terms."""
    method = create_method(name, "sr", params)
    g = torch.Generator().manual_seed(seed)
    student, teacher = ({"image": torch.rand(2, 3, 8, 8, generator=g, requires_grad=True),
                         **{k: torch.randn(2, width, 4, 4, generator=g, requires_grad=True) for k in STAGES}}
                        for width in (4, 6))
    hr = torch.rand(2, 3, 8, 8, generator=g)
    method.bind(*({k: tuple(v.shape[1:]) for k, v in outputs.items()} for outputs in (student, teacher)))
    terms = method(student, teacher, hr, epoch=1)
    alpha = params["alpha"]
    assert terms["l1"].item() == pytest.approx((1 - alpha) * (student["image"] - hr).abs().mean().item())
    assert terms["kd"].item() == pytest.approx(alpha * (student["image"] - teacher["image"]).abs().mean().item())
    return method, student, teacher, terms


def test_fakd_defaults_terms_and_gradients_follow_the_released_loss() -> None:
    cls = method_class("fakd", "sr")
    assert cls.defaults() == {"alpha": 0.5, "w_fa": 10.0}
    assert set(cls.search_space()) == {"alpha", "w_fa"}
    method, student, teacher, terms = _feature_kd_terms("fakd", {"alpha": 0.3, "w_fa": 2.0}, seed=2)
    assert method.student_outputs() == STAGES and method.teacher_outputs() == ("image", *STAGES)
    assert set(terms) == {"l1", "kd", "fa"}
    fa = affinity_loss([student[k] for k in STAGES], [teacher[k] for k in STAGES])
    assert terms["fa"].item() == pytest.approx(2.0 * fa.item())
    sum(terms.values()).backward()
    assert all(student[k].grad is not None and student[k].grad.abs().sum() > 0 for k in student)
    assert all(teacher[k].grad is None for k in teacher)  # the teacher is never trained


def test_fakd_refuses_maps_of_another_spatial_size_and_bad_weights() -> None:
    method = create_method("fakd", "sr")
    image = {"image": (3, 16, 16)}
    with pytest.raises(ValueError, match="'stage:1' must be .* same h x w"):
        method.bind({**image, **{k: (8, 4, 4) for k in STAGES}},
                    {**image, **{k: (16, 4, 4) if k != "stage:1" else (16, 4, 5) for k in STAGES}})
    with pytest.raises(ValueError, match="teacher provided no 'stage:0'"):
        method.bind({**image, **{k: (8, 4, 4) for k in STAGES}}, image)
    with pytest.raises(ValueError, match=r"'fakd': alpha=1.5 is invalid"):
        create_method("fakd", "sr", {"alpha": 1.5})


def _hand_attention_distance(fs: torch.Tensor, ft: torch.Tensor, p: float) -> float:
    """AT's eq. 2 term by loops: per image, ``Q = vec(mean_c |F_c|^p)`` over its norm, the squared differences
    averaged over images and positions."""
    total, count = 0.0, 0
    for b in range(fs.shape[0]):
        maps = []
        for f in (fs[b].tolist(), ft[b].tolist()):
            q = [sum(abs(f[c][y][x]) ** p for c in range(len(f))) / len(f)
                 for y in range(len(f[0])) for x in range(len(f[0][0]))]
            norm = math.sqrt(sum(v * v for v in q))
            maps.append([v / norm for v in q])
        total += sum((a - t) ** 2 for a, t in zip(*maps))
        count += len(maps[0])
    return total / count


def test_sr_attention_transfer_in_fakds_frame_against_a_hand_computation() -> None:
    cls = method_class("at", "sr")
    assert cls.defaults() == {"alpha": 0.5, "w_at": 1000.0, "p": 2.0}  # FAKD's alpha, AT's beta and p
    assert set(cls.search_space()) == {"alpha", "w_at"}
    method, student, teacher, terms = _feature_kd_terms("at", {"alpha": 0.25, "w_at": 100.0}, seed=3)
    assert method.teacher_outputs() == ("image", *STAGES)  # what fakd asks of a teacher: one served teacher for both
    assert set(terms) == {"l1", "kd", "at"}
    expected = sum(_hand_attention_distance(student[k].detach(), teacher[k].detach(), 2.0) for k in STAGES)
    assert terms["at"].item() == pytest.approx(100.0 * expected, rel=1e-5)
    terms["at"].backward()
    assert all(student[k].grad.abs().sum() > 0 for k in STAGES) and student["image"].grad is None


@pytest.mark.parametrize("name", sorted(TINY))
def test_sr_networks_give_three_lr_sized_feature_maps(name: str) -> None:
    """Every MTKD student and teacher family has ``stage:0..2``, image-shaped at the LR patch's size, so any
    student pairs with any teacher under ``fakd``."""
    model = create_model(name, scale=2, **TINY[name])
    assert len(model.stage_names) == 3
    shapes = output_shapes(model, STAGES, (3, 12, 12), output="image")
    assert shapes["image"] == (3, 24, 24)
    assert all(len(shapes[k]) == 3 and shapes[k][1:] == (12, 12) for k in STAGES), shapes


def test_stage_points_follow_the_released_splits() -> None:
    """FAKD's released code takes EDSR's body in thirds and RCAN's groups 2 and 6 of 10 (0-based)."""
    assert create_model("edsr_baseline", scale=4).stage_names == ("body.4", "body.9", "body.16")
    assert create_model("rcan", scale=4).stage_names == ("body.2", "body.6", "body.10")
    assert create_model("edsr_baseline", scale=4, n_resblocks=1).stage_names == ("head.0", "head.0", "body.1")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")


def _cfg(demo: Path, model: str, **kw) -> TrainConfig:
    data = DataConfig(task="sr", dataset="demo_sr", root=str(demo), scale=2, patch_size=16)
    return TrainConfig(model=ModelConfig(model, TINY[model]), data=data,
                       optim=OptimConfig(name="adam", lr=2e-3, weight_decay=0.0, epochs=1, batch_size=2,
                                         steps_per_epoch=2), runtime=RuntimeConfig(device="cpu"), **kw)


def test_fakd_and_at_distil_a_tiny_student_from_a_tiny_teacher_in_process(demo: Path, tmp_path: Path) -> None:
    teacher_run = train(_cfg(demo, "edsr"), checkpoint_dir=tmp_path / "teacher")
    assert math.isfinite(teacher_run["val_psnr"])
    # a CNN and a transformer student of a CNN teacher, by FAKD's affinities and by attention transfer
    for student, method, term in (("edsr_baseline", "fakd", "fa"), ("swinir_light", "fakd", "fa"),
                                  ("edsr_baseline", "at", "at")):
        cfg = _cfg(demo, student, method=MethodConfig(method), teacher=TeacherConfig(str(tmp_path / "teacher")))
        metrics = train(cfg, checkpoint_dir=tmp_path / f"{student}-{method}")
        assert math.isfinite(metrics["val_psnr"]) and 0 < metrics["val_ssim"] <= 1
        assert metrics[f"train_{term}"] > 0 and metrics["train_kd"] > 0 and metrics["train_l1"] > 0
        assert metrics["teacher_samples_computed"] == 4  # two steps of two patches, in-process
