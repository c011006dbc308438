from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd.losses.figkd import figkd_hf_loss
from raykd.losses.kd import dkd_terms, kd_loss
from raykd.methods import Method, create_method, list_methods, method_defaults, register_method

EXPECTED_DEFAULTS = {
    "none": {},
    "kd": {"w_ce": 0.1, "w_kd": 0.9, "T": 4.0},
    "dkd": {"w_ce": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup_epochs": 20},
    "figkd": {"w_ce": 1.0, "w_hf": 1.0, "T": 1.0, "level": 1, "wavelet": "haar", "distance": "mse"},
    "dfd": {"w_ce": 1.0, "lambda": 1.0},
    "fitnet": {"w_ce": 1.0, "w_hint": 100.0, "stage": 1},
    "at": {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0},
}
TERMS = {
    "none": {"ce"},
    "kd": {"ce", "kd"},
    "dkd": {"ce", "tckd", "nckd"},
    "figkd": {"ce", "hf"},
    "dfd": {"ce", "dfd"},
    "fitnet": {"ce", "hint"},
    "at": {"ce", "at"},
}
B, C = 4, 10


def _batch(method: Method, seed: int = 0) -> tuple[dict, dict, torch.Tensor]:
    """Random student/teacher outputs for exactly the names the method asks for."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"logits": (C,), "penultimate": (16,), "stage:1": (8, 4, 4)}
    shapes.update({f"stage:{k}": (6, 8 // 2 ** (k + 3), 8 // 2 ** (k + 3)) for k in (-3, -2, -1)})
    t_shapes = {**shapes, "stage:1": (12, 4, 4)}
    student = {n: torch.randn(B, *shapes[n], generator=g, requires_grad=True) for n in method.student_outputs()}
    # requires_grad on the teacher too, so tests can check that no gradient ever reaches it
    teacher = {n: torch.randn(B, *t_shapes[n], generator=g, requires_grad=True) for n in method.teacher_outputs()}
    method.bind(
        {n: tuple(v.shape[1:]) for n, v in student.items()}, {n: tuple(v.shape[1:]) for n, v in teacher.items()}
    )
    return student, teacher, torch.randint(0, C, (B,), generator=g)


def test_registry_lists_every_classification_method_with_paper_defaults() -> None:
    assert set(EXPECTED_DEFAULTS) <= set(list_methods())
    assert list_methods() == sorted(list_methods())
    for name, expected in EXPECTED_DEFAULTS.items():
        assert method_defaults(name) == expected, name
        method = create_method(name)
        assert method.name == name and method.task == "cls"
        assert method.params == expected
        assert "logits" in method.student_outputs()
    assert create_method("dfd").student_input == "lr"
    assert {create_method(n).student_input for n in EXPECTED_DEFAULTS if n != "dfd"} == {"hr"}


def test_params_override_defaults_without_mutating_them() -> None:
    m = create_method("kd", T=2.0)
    assert m.params == {"w_ce": 0.1, "w_kd": 0.9, "T": 2.0}
    m.params["T"] = 8.0
    assert method_defaults("kd")["T"] == 4.0 and create_method("kd").params["T"] == 4.0


def test_unknown_parameter_names_the_method_and_allowed_keys() -> None:
    allowed = r"allowed: \['T', 'alpha', 'beta', 'w_ce', 'warmup_epochs'\]"
    with pytest.raises(ValueError, match=r"'dkd'.*\['temp'\].*" + allowed):
        create_method("dkd", temp=4.0)
    with pytest.raises(ValueError, match="'none'.*takes no parameters"):
        create_method("none", w_ce=1.0)
    with pytest.raises(ValueError, match="unknown cls method 'kdd'.*available"):
        create_method("kdd")
    with pytest.raises(ValueError, match="unknown cls method"):
        method_defaults("kdd")


def test_registering_a_taken_name_fails() -> None:
    class Clash(Method):
        name = "kd"
        defaults = {}

    with pytest.raises(ValueError, match="already registered"):
        register_method(Clash)


def test_declared_outputs() -> None:
    assert create_method("none").teacher_outputs() == ()
    assert create_method("kd").teacher_outputs() == ("logits",)
    assert create_method("figkd").teacher_outputs() == ("logits",)
    assert create_method("dfd").teacher_outputs() == ("penultimate",)
    assert create_method("dfd").student_outputs() == ("logits", "penultimate")
    assert create_method("fitnet").teacher_outputs() == ("stage:1",)
    assert create_method("fitnet", stage=-1).student_outputs() == ("logits", "stage:-1")
    assert create_method("at").teacher_outputs() == ("stage:-3", "stage:-2", "stage:-1")


@pytest.mark.parametrize("name", sorted(EXPECTED_DEFAULTS))
def test_forward_returns_named_scalar_terms_that_train_the_student(name: str) -> None:
    method = create_method(name)
    student, teacher, target = _batch(method)
    terms = method(student, teacher, target, epoch=30)
    assert set(terms) == TERMS[name]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert student["logits"].grad is not None
    assert all(v.grad is None for v in teacher.values())


def test_terms_are_weighted_as_documented() -> None:
    student, teacher, target = _batch(create_method("kd"), seed=1)
    z_s, z_t = student["logits"].detach(), teacher["logits"].detach()
    ce = -np.mean(F.log_softmax(z_s.double(), dim=1).numpy()[np.arange(B), target.numpy()])
    kd = create_method("kd", w_ce=0.3, w_kd=2.0, T=3.0)(student, teacher, target, epoch=1)
    assert kd["ce"].item() == pytest.approx(0.3 * ce, rel=1e-5)
    assert kd["kd"].item() == pytest.approx(2.0 * kd_loss(z_s, z_t, T=3.0).item(), rel=1e-6)
    fig = create_method("figkd", w_hf=5.0, T=2.0, level=2, distance="l1")(student, teacher, target, epoch=1)
    ref = figkd_hf_loss(z_s, z_t, T=2.0, level=2, distance="l1")
    assert fig["hf"].item() == pytest.approx(5.0 * ref.item(), rel=1e-6)


@pytest.mark.parametrize(("epoch", "warmup", "factor"), [(5, 20, 0.25), (20, 20, 1.0), (60, 20, 1.0), (1, 0, 1.0)])
def test_dkd_linear_warmup(epoch: int, warmup: int, factor: float) -> None:
    method = create_method("dkd", alpha=2.0, beta=3.0, warmup_epochs=warmup)
    student, teacher, target = _batch(method, seed=2)
    terms = method(student, teacher, target, epoch=epoch)
    tckd, nckd = dkd_terms(student["logits"], teacher["logits"], target, T=4.0)
    assert terms["tckd"].item() == pytest.approx(factor * 2.0 * tckd.item(), rel=1e-6)
    assert terms["nckd"].item() == pytest.approx(factor * 3.0 * nckd.item(), rel=1e-6)


def test_fitnet_bind_creates_a_trainable_regressor() -> None:
    method = create_method("fitnet")
    assert list(method.parameters()) == []
    with pytest.raises(RuntimeError, match="bind"):
        method({"logits": torch.zeros(B, C), "stage:1": torch.zeros(B, 8, 4, 4)}, {}, torch.zeros(B).long(), 1)
    student, teacher, target = _batch(method, seed=3)  # student (8, 4, 4) -> teacher (12, 4, 4)
    conv = method.regressor.proj[0]
    assert conv.weight.shape == (12, 8, 1, 1)
    assert sum(p.numel() for p in method.parameters()) > 0
    method(student, teacher, target, epoch=1)["hint"].backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert student["stage:1"].grad is not None


def test_dfd_is_the_paper_loss_for_equal_widths_and_projects_unequal_ones() -> None:
    same = create_method("dfd", **{"lambda": 2.0})
    same.bind({"logits": (C,), "penultimate": (16,)}, {"penultimate": (16,)})
    assert sum(p.numel() for p in same.parameters()) == 0
    f_s, f_t = torch.randn(4, 16), torch.randn(4, 16)
    out = same({"logits": torch.randn(4, C), "penultimate": f_s}, {"penultimate": f_t}, torch.zeros(4).long(), 1)
    torch.testing.assert_close(out["dfd"], 2.0 * 0.5 * ((f_s - f_t) ** 2).sum(1).mean())

    wider = create_method("dfd")
    wider.bind({"logits": (C,), "penultimate": (16,)}, {"penultimate": (32,)})
    out = wider({"logits": torch.randn(4, C), "penultimate": f_s.requires_grad_()}, {"penultimate": torch.randn(4, 32)},
                torch.zeros(4).long(), 1)
    out["dfd"].backward()
    assert all(p.grad is not None for p in wider.parameters()) and f_s.grad is not None


def test_bind_rejects_missing_or_incompatible_outputs() -> None:
    with pytest.raises(ValueError, match="'fitnet'.*teacher provided no 'stage:1'"):
        create_method("fitnet").bind({"logits": (C,), "stage:1": (8, 4, 4)}, {"logits": (C,)})
    with pytest.raises(ValueError, match="'dfd'.*teacher provided no 'penultimate'"):
        create_method("dfd").bind({"logits": (C,), "penultimate": (16,)}, {"logits": (C,)})
    with pytest.raises(ValueError, match="'kd'.*'logits'"):
        create_method("kd").bind({"logits": (C,)}, {"logits": (C + 1,)})


def test_figkd_options_are_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="distance"):
        create_method("figkd", distance="cosine")
    with pytest.raises(ValueError, match="wavelet"):
        create_method("figkd", wavelet="nope")
