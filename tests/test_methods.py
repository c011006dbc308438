"""Classification distillation methods: registry, defaults, hyperparameter checks, loss terms and gradients.

The hyperparameter checks run over every registered method of both tasks (``test_every_knob_...``), so a new
method or knob is covered without editing this file.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd.losses.figkd import figkd_hf_loss, max_level
from raykd.losses.kd import dkd_terms, kd_loss, mlkd_terms
from raykd.methods import Method, Param, create_method, method_class
from raykd.registry import METHODS

EXPECTED_DEFAULTS = {
    "none": {},
    "kd": {"w_ce": 0.1, "w_kd": 0.9, "T": 4.0},
    "dkd": {"w_ce": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup_epochs": 20},
    "mlkd": {"w_ce": 0.1, "w_kd": 0.9, "w_class": 1.0},
    "figkd": {"w_ce": 1.0, "w_hf": 1.0, "T": 1.0, "level": 1, "wavelet": "haar", "distance": "mse", "bands": "high",
              "reduction": "mean"},
    "dfd": {"w_ce": 1.0, "lambda": 2.0},
    "fitnet": {"w_ce": 1.0, "w_hint": 100.0, "stage": 1},
    "at": {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0},
}
TERMS = {
    "none": {"ce"},
    "kd": {"ce", "kd"},
    "dkd": {"ce", "tckd", "nckd"},
    "mlkd": {"ce", "mlkd_instance", "mlkd_batch", "mlkd_class"},
    "figkd": {"ce", "hf"},
    "dfd": {"ce", "dfd"},
    "fitnet": {"ce", "hint"},
    "at": {"ce", "at"},
}
B, C = 4, 10


def _batch(method: Method, seed: int = 0) -> tuple[dict, dict, torch.Tensor]:
    """Random student/teacher outputs for exactly the names the method asks for (plus the student's logits)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"logits": (C,), "penultimate": (16,), "stage:1": (8, 4, 4)}
    shapes.update({f"stage:{k}": (6, 8 // 2 ** (k + 3), 8 // 2 ** (k + 3)) for k in (-3, -2, -1)})
    t_shapes = {**shapes, "stage:1": (12, 4, 4)}
    names = ("logits", *method.student_outputs())
    student = {n: torch.randn(B, *shapes[n], generator=g, requires_grad=True) for n in names}
    # requires_grad on the teacher too, so tests can check that no gradient ever reaches it
    teacher = {n: torch.randn(B, *t_shapes[n], generator=g, requires_grad=True) for n in method.teacher_outputs()}
    method.bind(
        {n: tuple(v.shape[1:]) for n, v in student.items()}, {n: tuple(v.shape[1:]) for n, v in teacher.items()}
    )
    return student, teacher, torch.randint(0, C, (B,), generator=g)


# --------------------------------------------------------------------------------------- registry, defaults


def test_registry_lists_every_classification_method_with_paper_defaults() -> None:
    names = METHODS.names("cls")
    assert set(EXPECTED_DEFAULTS) <= set(names) and names == sorted(names)
    for name, expected in EXPECTED_DEFAULTS.items():
        cls = method_class(name)
        assert cls.defaults() == expected, name
        method = create_method(name)
        assert method.name == name and method.task == "cls"
        assert method.params == expected
        assert "logits" not in method.student_outputs()  # the model's own output is always captured
    assert method_class("dfd").student_input == "lr"
    assert {method_class(n).student_input for n in EXPECTED_DEFAULTS if n != "dfd"} == {"hr"}


def test_params_override_defaults_without_mutating_them() -> None:
    m = create_method("kd", params={"T": 2.0})
    assert m.params == {"w_ce": 0.1, "w_kd": 0.9, "T": 2.0}
    m.params["T"] = 8.0
    assert method_class("kd").defaults()["T"] == 4.0 and create_method("kd").params["T"] == 4.0
    # integers given for real knobs (and integral floats for integer knobs) are stored in the knob's type
    dkd = create_method("dkd", params={"beta": 2, "warmup_epochs": 5.0})
    assert dkd.params["beta"] == 2.0 and type(dkd.params["beta"]) is float
    assert dkd.params["warmup_epochs"] == 5 and type(dkd.params["warmup_epochs"]) is int


def test_unknown_parameter_names_the_method_and_allowed_keys() -> None:
    allowed = r"allowed: \['T', 'alpha', 'beta', 'w_ce', 'warmup_epochs'\]"
    with pytest.raises(ValueError, match=r"'dkd'.*\['temp'\].*" + allowed):
        create_method("dkd", params={"temp": 4.0})
    with pytest.raises(ValueError, match="'none'.*takes no parameters"):
        create_method("none", params={"w_ce": 1.0})


def test_unknown_method_and_wrong_task_are_named() -> None:
    with pytest.raises(KeyError, match=r"unknown cls method 'kdd'.*registered: \[.*'dkd'.*'kd'"):
        create_method("kdd")
    with pytest.raises(KeyError, match="unknown cls method 'l1kd'"):  # an SR method is not a cls one
        method_class("l1kd", "cls")
    with pytest.raises(ValueError, match="method scope 'seg'"):
        method_class("kd", "seg")


def test_registering_a_taken_name_fails_and_the_original_stays() -> None:
    class Clash(Method):
        name = "kd"

    with pytest.raises(ValueError, match="'kd' for cls is registered twice"):
        METHODS.register(Clash)
    assert method_class("kd").__name__ == "KD"


def test_a_method_named_by_import_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_methods.py").write_text(
        "from raykd.methods import Float, Method\n"
        "class Half(Method):\n"
        "    name = 'half'\n"
        "    hparams = {'w': Float(0.5)}\n"
        "    def forward(self, student, teacher, target, epoch):\n"
        "        return {'ce': self.params['w'] * student['logits'].sum()}\n"
        "class SRHalf(Half):\n"
        "    task = 'sr'\n"
        "def not_a_method():\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    method = create_method("my_methods:Half", params={"w": 2.0})
    assert method.params == {"w": 2.0}
    assert method({"logits": torch.ones(2, 3)}, {}, torch.zeros(2).long(), 1)["ce"].item() == 12.0
    with pytest.raises(ValueError, match=r"method 'half': w=-1 is invalid"):
        create_method("my_methods:Half", params={"w": -1})
    with pytest.raises(ValueError, match="is a sr method; this run's data is cls"):
        method_class("my_methods:SRHalf", "cls")
    with pytest.raises(ValueError, match=r"is a cls method; this run's data is sr \(an SR method subclasses "
                                         r"raykd.methods.SRMethod"):
        method_class("my_methods:Half", "sr")
    with pytest.raises(TypeError, match="not a raykd.methods.Method subclass"):
        method_class("my_methods:not_a_method")


# ------------------------------------------------------------------------ hyperparameters: every knob


def _all_methods() -> list[tuple[str, str]]:
    return [(task, name) for task in METHODS.scopes for name in METHODS.names(task)]


def _bad_values(param: Param) -> list[tuple[str, Any]]:
    """(why, value) pairs ``param`` must refuse."""
    cases: list[tuple[str, Any]] = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf),
                                    ("string", "1"), ("bool", True), ("None", None), ("list", [1.0])]
    if param.kind == "choice":
        return cases + [("unknown choice", "no-such-option"), ("number", 1.5)]
    if param.kind == "int":
        cases.append(("fraction", 1.5))
    if param.low is not None:
        cases.append(("below low", param.low if param.low_open else param.low - 1))
        if not param.low_open and param.kind == "float":
            cases.append(("just below low", np.nextafter(param.low, -math.inf)))
    if param.high is not None:
        cases.append(("above high", param.high + 1))
    return cases


KNOBS = [(task, name, knob) for task, name in _all_methods() for knob in method_class(name, task).hparams]


def test_the_knob_list_covers_both_tasks_and_all_known_methods() -> None:
    """Guards the parametrisation below against silently covering nothing."""
    methods = {(task, name) for task, name, _ in KNOBS}
    assert {("cls", n) for n in EXPECTED_DEFAULTS if EXPECTED_DEFAULTS[n]} <= methods
    assert {("sr", "l1kd"), ("sr", "mtkd"), ("sr", "dvmsr"), ("cls", "vimd")} <= methods


@pytest.mark.parametrize(("task", "name", "knob"), KNOBS, ids=[f"{t}-{n}-{k}" for t, n, k in KNOBS])
def test_every_knob_refuses_nan_inf_wrong_types_and_out_of_range_values(task: str, name: str, knob: str) -> None:
    param = method_class(name, task).hparams[knob]
    for why, value in _bad_values(param):
        with pytest.raises(ValueError) as info:
            create_method(name, task, {knob: value})
        message = str(info.value)
        assert f"method {name!r}" in message, (why, message)
        assert f"{knob}={value!r}" in message, (why, message)


@pytest.mark.parametrize(("task", "name"), _all_methods(), ids=[f"{t}-{n}" for t, n in _all_methods()])
def test_every_default_and_search_value_is_valid(task: str, name: str) -> None:
    cls = method_class(name, task)
    assert cls.task == task and cls.name == name
    method = create_method(name, task)
    assert method.params == cls.defaults()
    for knob, param in cls.hparams.items():
        assert param.check(name, knob, param.default) == param.default
        # what a sweep may try is valid too
        tried = list(param.categorical or ()) if param.categorical is not None else list(param.search or ())
        for value in tried:
            param.check(name, knob, value)
        create_method(name, task, {knob: param.default})


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("kd", {"T": math.nan}, r"method 'kd': T=nan is invalid; expected a finite number"),
        ("kd", {"T": 0.0}, r"method 'kd': T=0.0 is invalid; expected a number > 0"),
        ("dkd", {"beta": -5}, r"method 'dkd': beta=-5 is invalid; expected a number >= 0"),
        ("dkd", {"warmup_epochs": math.inf}, r"method 'dkd': warmup_epochs=inf is invalid; expected a finite"),
        ("figkd", {"level": 1.5}, r"method 'figkd': level=1.5 is invalid; expected an integer"),
        ("figkd", {"level": 0}, r"method 'figkd': level=0 is invalid; expected an integer >= 1"),
        ("figkd", {"distance": "cosine"}, r"method 'figkd': distance='cosine' is invalid; expected one of"),
        ("figkd", {"wavelet": "nope"}, r"method 'figkd': wavelet='nope'"),
        ("figkd", {"bands": "mid"},
         r"method 'figkd': bands='mid' is invalid; expected one of \['high', 'low', 'all'\]"),
    ],
)
def test_issue_cases(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_method(name, params=params)


@pytest.mark.parametrize("classes", [10, 100, 200])
def test_figkd_level_too_deep_for_the_classes_fails_at_bind_before_any_tensor_work(classes: int) -> None:
    top = max_level(classes)
    method = create_method("figkd", params={"level": 50})  # no bound before the class count is known
    with pytest.raises(ValueError, match=rf"level=50 is too deep for {classes} classes.*levels 1 to {top}"):
        method.bind({"logits": (classes,)}, {"logits": (classes,)})
    ok = create_method("figkd", params={"level": top})
    ok.bind({"logits": (classes,)}, {"logits": (classes,)})
    z = torch.randn(2, classes)
    assert torch.isfinite(ok({"logits": z}, {"logits": z.flip(1)}, torch.zeros(2).long(), 1)["hf"])


# ------------------------------------------------------------------------------------ outputs, loss terms


def test_declared_outputs() -> None:
    assert create_method("none").teacher_outputs() == ()
    assert create_method("kd").teacher_outputs() == ("logits",)
    assert create_method("figkd").teacher_outputs() == ("logits",)
    assert create_method("dfd").teacher_outputs() == ("penultimate",)
    assert create_method("dfd").student_outputs() == ("penultimate",)
    assert create_method("fitnet").teacher_outputs() == ("stage:1",)
    assert create_method("fitnet", params={"stage": -1}).student_outputs() == ("stage:-1",)
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
    kd = create_method("kd", params={"w_ce": 0.3, "w_kd": 2.0, "T": 3.0})(student, teacher, target, epoch=1)
    assert kd["ce"].item() == pytest.approx(0.3 * ce, rel=1e-5)
    assert kd["kd"].item() == pytest.approx(2.0 * kd_loss(z_s, z_t, T=3.0).item(), rel=1e-6)
    params = {"w_hf": 5.0, "T": 2.0, "level": 2, "distance": "l1", "bands": "all"}
    fig = create_method("figkd", params=params)(student, teacher, target, epoch=1)
    ref = figkd_hf_loss(z_s, z_t, T=2.0, level=2, distance="l1", bands="all")
    assert fig["hf"].item() == pytest.approx(5.0 * ref.item(), rel=1e-6)
    assert ref.item() != pytest.approx(figkd_hf_loss(z_s, z_t, T=2.0, level=2, distance="l1").item())
    mlkd = create_method("mlkd", params={"w_kd": 2.0, "w_class": 0.01})(student, teacher, target, epoch=1)
    instance, batch, klass = mlkd_terms(z_s, z_t)
    kept = 0.5 if B % 2 == 0 else (B // 2 + 1) / B  # the released code's masks keep the less confident half
    assert mlkd["mlkd_instance"].item() == pytest.approx(2.0 * kept * instance.item(), rel=1e-6)
    assert mlkd["mlkd_batch"].item() == pytest.approx(2.0 * kept * batch.item(), rel=1e-6)
    classes = z_t.shape[1]
    kept_classes = 0.5 if classes % 2 == 0 else (classes // 2 + 1) / classes
    assert mlkd["mlkd_class"].item() == pytest.approx(2.0 * 0.01 * kept_classes * klass.item(), rel=1e-6)


@pytest.mark.parametrize(("epoch", "warmup", "factor"), [(5, 20, 0.25), (20, 20, 1.0), (60, 20, 1.0), (1, 0, 1.0)])
def test_dkd_linear_warmup(epoch: int, warmup: int, factor: float) -> None:
    method = create_method("dkd", params={"alpha": 2.0, "beta": 3.0, "warmup_epochs": warmup})
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
    same = create_method("dfd")  # lambda 2 by default
    same.bind({"logits": (C,), "penultimate": (16,)}, {"penultimate": (16,)})
    assert sum(p.numel() for p in same.parameters()) == 0
    f_s, f_t = torch.randn(4, 16), torch.randn(4, 16)
    out = same({"logits": torch.randn(4, C), "penultimate": f_s}, {"penultimate": f_t}, torch.zeros(4).long(), 1)
    torch.testing.assert_close(out["dfd"], 2.0 * 0.5 * ((f_s - f_t) ** 2).sum(1).mean())

    wider = create_method("dfd", params={"lambda": 0.5})
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
    with pytest.raises(ValueError, match="'figkd'.*'logits'"):
        create_method("figkd").bind({"logits": (C,)}, {"logits": (C + 1,)})
