"""Super-resolution distillation methods: none, l1kd, mtkd (registered for task ``"sr"``).

The student's and the teachers' SR images are the output named ``"image"`` (``(B, 3, sH, sW)``); for ``mtkd``
the teacher's ``"image"`` is the knowledge aggregator's (:mod:`raykd.models.aggregator`), computed once from the
teachers' outputs and stored in turn. The ``target`` passed to :meth:`forward` is the HR ground truth. Teacher
outputs and the target are detached.
"""
from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from raykd.losses.sr import wavelet_loss
from raykd.methods.base import Choice, Float, Int, Method, Outputs, Param, Shapes, require_same_shape
from raykd.methods.classification import WAVELETS
from raykd.registry import METHODS

__all__ = ["SRMethod", "SRNoDistill", "L1KD", "MTKD"]


def _l1(student: Outputs, target: Tensor) -> Tensor:
    return F.l1_loss(student["image"], target.detach())


class SRMethod(Method):
    """Shared SR settings: the student super-resolves the LR input; teacher and student SR images must match."""

    task = "sr"
    student_input = "lr"

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        if "image" in self.teacher_outputs():
            require_same_shape(self.name, "image", student_shapes, teacher_shapes)


@METHODS.register()
class SRNoDistill(SRMethod):
    """The student alone, trained with ``L1(I_stu, I_GT)`` (the ``none`` baseline for SR)."""

    name = "none"

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        return {"l1": _l1(student, target)}


@METHODS.register()
class L1KD(SRMethod):
    """Plain output distillation for SR: ``w_gt * L1(I_stu, I_GT) + w_kd * L1(I_stu, I_tea)``.

    The usual SR KD baseline (and DVMSR's end-level loss); weights default to 1 and 1.
    """

    name = "l1kd"
    hparams: ClassVar[dict[str, Param]] = {"w_gt": Float(1.0), "w_kd": Float(1.0, search=(0.1, 10.0), log=True)}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("image",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"l1": p["w_gt"] * _l1(student, target), "kd": p["w_kd"] * _l1(student, teacher["image"])}


@METHODS.register()
class MTKD(SRMethod):
    """MTKD stage 2 (Jiang et al., ECCV 2024, Sec. 3.2): ``alpha * L1(I_stu, I_GT) + L_wav(I_stu, I_MT)``.

    ``I_MT`` is the aggregated teacher image, served as the teacher output ``"image"``. ``L_wav`` is
    :func:`raykd.losses.sr.wavelet_loss` over a ``levels``-level (``K``) DWT with ``wavelet``; the terms sum to
    :func:`raykd.losses.sr.mtkd_loss`. Defaults are the paper's: ``alpha`` 0.1, ``K`` 1, Haar.
    """

    name = "mtkd"
    hparams: ClassVar[dict[str, Param]] = {
        "alpha": Float(0.1, search=(0.01, 1.0), log=True), "levels": Int(1, low=1, grid=(1, 2, 3)),
        "wavelet": Choice("haar", WAVELETS, search=("haar", "db2"))}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("image",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"l1": p["alpha"] * _l1(student, target),
                "wavelet": wavelet_loss(student["image"], teacher["image"], p["levels"], p["wavelet"])}
