"""Super-resolution distillation methods: none, l1kd, mtkd (registered for task ``"sr"``).

Naming convention: the SR image is the output named ``"logits"``, the vocabulary of
:func:`raykd.models.features.forward_features` for "what the model's forward returns", so the trainer's
capture, the teacher pool and the cache need no SR special case. For a student that is its ``(B, 3, sH, sW)``
SR image; for a teacher the same; for ``mtkd`` the teacher output ``"logits"`` is the knowledge aggregator's
image (:mod:`raykd.models.aggregator`), computed once from the cached teacher outputs and cached in turn. The
``target`` passed to :meth:`forward` is the HR ground truth. Teacher outputs and the target are detached.
"""
from __future__ import annotations

import numbers
from typing import Any, ClassVar

import pywt
import torch.nn.functional as F
from torch import Tensor

from raykd.losses.sr import wavelet_loss
from raykd.methods.base import Method, Outputs, Shapes, register_method
from raykd.methods.classification import _require_same_shape

__all__ = ["SRNoDistill", "L1KD", "MTKD"]


def _l1(student: Outputs, target: Tensor) -> Tensor:
    return F.l1_loss(student["logits"], target.detach())


class _SRMethod(Method):
    """Shared SR settings: the student super-resolves the LR input; teacher and student SR images must match."""

    task = "sr"
    student_input = "lr"

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        if self.teacher_outputs():
            _require_same_shape(self.name, "logits", student_shapes, teacher_shapes)


@register_method
class SRNoDistill(_SRMethod):
    """The student alone, trained with ``L1(I_stu, I_GT)`` (the ``none`` baseline for SR)."""

    name = "none"
    defaults: ClassVar[dict[str, Any]] = {}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        return {"l1": _l1(student, target)}


@register_method
class L1KD(_SRMethod):
    """Plain output distillation for SR: ``w_gt * L1(I_stu, I_GT) + w_kd * L1(I_stu, I_tea)``.

    The usual SR KD baseline (and DVMSR's end-level loss); weights default to 1 and 1.
    """

    name = "l1kd"
    defaults: ClassVar[dict[str, Any]] = {"w_gt": 1.0, "w_kd": 1.0}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"l1": p["w_gt"] * _l1(student, target), "kd": p["w_kd"] * _l1(student, teacher["logits"])}


@register_method
class MTKD(_SRMethod):
    """MTKD stage 2 (Jiang et al., ECCV 2024, Sec. 3.2): ``alpha * L1(I_stu, I_GT) + L_wav(I_stu, I_MT)``.

    ``I_MT`` is the aggregated teacher image, served as the teacher output ``"logits"``. ``L_wav`` is
    :func:`raykd.losses.sr.wavelet_loss` over a ``levels``-level (``K``) DWT with ``wavelet``; the terms sum to
    :func:`raykd.losses.sr.mtkd_loss`. Defaults are the paper's: ``alpha`` 0.1, ``K`` 1, Haar.
    """

    name = "mtkd"
    defaults: ClassVar[dict[str, Any]] = {"alpha": 0.1, "levels": 1, "wavelet": "haar"}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if p["alpha"] < 0:
            raise ValueError(f"method 'mtkd': alpha must be >= 0, got {p['alpha']}")
        if not isinstance(p["levels"], numbers.Integral) or p["levels"] < 1:
            raise ValueError(f"method 'mtkd': levels must be an integer >= 1, got {p['levels']!r}")
        p["levels"] = int(p["levels"])
        if p["wavelet"] not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"method 'mtkd': wavelet {p['wavelet']!r} is not a discrete PyWavelets wavelet "
                             "(e.g. 'haar', 'db2', 'sym4'; see pywt.wavelist(kind='discrete'))")

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {
            "l1": p["alpha"] * _l1(student, target),
            "wavelet": wavelet_loss(student["logits"], teacher["logits"], p["levels"], p["wavelet"]),
        }
