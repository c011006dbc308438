"""Classification distillation methods: none, kd, dkd, figkd, dfd, fitnet, at.

Default hyperparameters follow the papers, or mdistiller's CIFAR-100 configs (megvii-research/mdistiller,
``mdistiller/engine/cfg.py``) where the paper leaves them to the implementation.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.losses.features import HintRegressor, at_loss, dfd_loss, hint_loss
from raykd.losses.figkd import FiGKDLoss
from raykd.losses.kd import dkd_terms, kd_loss
from raykd.methods.base import Method, Outputs, Shapes, register_method

__all__ = ["NoDistill", "KD", "DKD", "FiGKD", "DFD", "FitNet", "AT"]


def _ce(student: Outputs, target: Tensor) -> Tensor:
    return F.cross_entropy(student["logits"], target)


def _require_outputs(method: str, key: str, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
    for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
        if key not in shapes:
            raise ValueError(f"method {method!r}: the {side} provided no {key!r} output (got {sorted(shapes)})")


def _require_same_shape(method: str, key: str, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
    _require_outputs(method, key, student_shapes, teacher_shapes)
    if tuple(student_shapes[key]) != tuple(teacher_shapes[key]):
        raise ValueError(
            f"method {method!r}: student and teacher {key!r} shapes must match, "
            f"got {tuple(student_shapes[key])} and {tuple(teacher_shapes[key])}"
        )


@register_method
class NoDistill(Method):
    """The student alone, trained with cross-entropy (the ``none`` baseline)."""

    name = "none"
    defaults: ClassVar[dict[str, Any]] = {}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        return {"ce": _ce(student, target)}


@register_method
class KD(Method):
    """Hinton et al. 2015: ``w_ce * CE + w_kd * T^2 KL`` (:func:`raykd.losses.kd.kd_loss`).

    Defaults from mdistiller's KD config: ``w_ce`` 0.1, ``w_kd`` 0.9, ``T`` 4 (Hinton et al. advise a much
    lower weight on the hard-label term).
    """

    name = "kd"
    defaults: ClassVar[dict[str, Any]] = {"w_ce": 0.1, "w_kd": 0.9, "T": 4.0}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        _require_same_shape(self.name, "logits", student_shapes, teacher_shapes)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {
            "ce": p["w_ce"] * _ce(student, target),
            "kd": p["w_kd"] * kd_loss(student["logits"], teacher["logits"], p["T"]),
        }


@register_method
class DKD(Method):
    """Decoupled KD (Zhao et al., CVPR 2022, eq. 7): ``w_ce * CE + warm * (alpha * TCKD + beta * NCKD)``.

    ``warm = min(epoch / warmup_epochs, 1)`` ramps the distillation terms in linearly (``warmup_epochs = 0``
    disables it). Defaults are the paper's CIFAR-100 settings (also mdistiller's): alpha 1, beta 8, T 4,
    20 warm-up epochs, CE weight 1. Returns ``tckd`` and ``nckd`` as separate terms so both can be logged.
    """

    name = "dkd"
    defaults: ClassVar[dict[str, Any]] = {"w_ce": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup_epochs": 20}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        _require_same_shape(self.name, "logits", student_shapes, teacher_shapes)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        warm = min(epoch / p["warmup_epochs"], 1.0) if p["warmup_epochs"] > 0 else 1.0
        tckd, nckd = dkd_terms(student["logits"], teacher["logits"], target, p["T"])
        return {
            "ce": p["w_ce"] * _ce(student, target),
            "tckd": warm * p["alpha"] * tckd,
            "nckd": warm * p["beta"] * nckd,
        }


@register_method
class FiGKD(Method):
    """FiGKD (Kim 2025, arXiv:2505.11897): ``w_ce * CE + w_hf * D(HF(DWT(z_s / T)), HF(DWT(z_t / T)))``.

    See :func:`raykd.losses.figkd.figkd_hf_loss` for every knob. The paper's weights and temperature could not
    be retrieved when this was written; the defaults (``w_ce`` 1, ``w_hf`` 1, ``T`` 1, one Haar level, MSE)
    are neutral starting points for a sweep, not published values.
    """

    name = "figkd"
    defaults: ClassVar[dict[str, Any]] = {
        "w_ce": 1.0,
        "w_hf": 1.0,
        "T": 1.0,
        "level": 1,
        "wavelet": "haar",
        "distance": "mse",
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.hf = FiGKDLoss(T=p["T"], wavelet=p["wavelet"], level=p["level"], distance=p["distance"])

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        _require_same_shape(self.name, "logits", student_shapes, teacher_shapes)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {
            "ce": p["w_ce"] * _ce(student, target),
            "hf": p["w_hf"] * self.hf(student["logits"], teacher["logits"]),
        }


@register_method
class DFD(Method):
    """Deep feature distillation for LR recognition (Zhu et al., ICASSP 2019; seed 002).

    ``w_ce * CE + lambda * 1/2 ||f_s(x_lr) - f_t(x_hr)||^2`` on penultimate features
    (:func:`raykd.losses.features.dfd_loss`); the student sees the LR input, the teacher the HR one.
    ``lambda`` defaults to 1 (unit weight): the paper's value could not be retrieved when this was written.

    The paper distils between copies of one architecture, so the features have one width. When a sweep pairs
    networks of different widths, a learned linear map (FitNet's regressor) takes the student's feature to the
    teacher's width first; with equal widths there is none and the loss is the paper's.
    """

    name = "dfd"
    student_input = "lr"
    defaults: ClassVar[dict[str, Any]] = {"w_ce": 1.0, "lambda": 1.0}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("penultimate",)

    def student_outputs(self) -> tuple[str, ...]:
        return ("logits", "penultimate")

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        _require_outputs(self.name, "penultimate", student_shapes, teacher_shapes)
        s, t = tuple(student_shapes["penultimate"]), tuple(teacher_shapes["penultimate"])
        self.projection = HintRegressor(s, t) if s != t else nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {
            "ce": p["w_ce"] * _ce(student, target),
            "dfd": p["lambda"] * dfd_loss(self.projection(student["penultimate"]), teacher["penultimate"]),
        }


@register_method
class FitNet(Method):
    """FitNets (Romero et al., ICLR 2015, eq. 3): ``w_ce * CE + w_hint * MSE(r(f_s), f_t)`` at one stage.

    ``stage`` indexes the network's stages like a Python list (default 1: the middle stage of a 3-stage CIFAR
    ResNet, the guided layer mdistiller uses). The regressor ``r`` is created in :meth:`bind` from the probed
    shapes and is trained with the student. Single-stage training (the paper trains the hint first, then KD)
    follows mdistiller; ``w_hint`` 100 and ``w_ce`` 1 are mdistiller's defaults.
    """

    name = "fitnet"
    defaults: ClassVar[dict[str, Any]] = {"w_ce": 1.0, "w_hint": 100.0, "stage": 1}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.regressor: HintRegressor | None = None

    @property
    def _key(self) -> str:
        return f"stage:{self.params['stage']}"

    def teacher_outputs(self) -> tuple[str, ...]:
        return (self._key,)

    def student_outputs(self) -> tuple[str, ...]:
        return ("logits", self._key)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        _require_outputs(self.name, self._key, student_shapes, teacher_shapes)
        self.regressor = HintRegressor(tuple(student_shapes[self._key]), tuple(teacher_shapes[self._key]))

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        if self.regressor is None:
            raise RuntimeError("method 'fitnet': call bind(student_shapes, teacher_shapes) before the first forward")
        p = self.params
        return {
            "ce": p["w_ce"] * _ce(student, target),
            "hint": p["w_hint"] * hint_loss(self.regressor(student[self._key]), teacher[self._key]),
        }


@register_method
class AT(Method):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2): ``w_ce * CE + w_at * sum_j AT_j``.

    The sum runs over the outputs of the last three stages (``stage:-3 .. stage:-1``: every group of a
    3-stage CIFAR ResNet/WRN, as in the paper). Defaults ``p`` 2, ``w_at`` 1000, ``w_ce`` 1 are the paper's
    ``beta = 10^3`` and mdistiller's settings.
    """

    name = "at"
    defaults: ClassVar[dict[str, Any]] = {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0}
    stages: ClassVar[tuple[int, ...]] = (-3, -2, -1)

    def teacher_outputs(self) -> tuple[str, ...]:
        return tuple(f"stage:{k}" for k in self.stages)

    def student_outputs(self) -> tuple[str, ...]:
        return ("logits", *self.teacher_outputs())

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        at = sum(at_loss(student[key], teacher[key], p["p"]) for key in self.teacher_outputs())
        return {"ce": p["w_ce"] * _ce(student, target), "at": p["w_at"] * at}
