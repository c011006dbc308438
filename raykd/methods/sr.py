"""Super-resolution distillation methods: none, l1kd, fakd, at, mtkd (registered for task ``"sr"``).

The student's and the teachers' SR images are the output named ``"image"`` (``(B, 3, sH, sW)``); for ``mtkd``
the teacher's ``"image"`` is the knowledge aggregator's (:mod:`raykd.models.aggregator`), computed once from the
teachers' outputs and stored in turn. The ``target`` passed to :meth:`forward` is the HR ground truth. Teacher
outputs and the target are detached.
"""
from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from raykd.losses.features import at_loss
from raykd.losses.sr import affinity_loss, wavelet_loss
from raykd.methods.base import (
    Choice, Float, Int, Method, Outputs, Param, Shapes, require_outputs, require_same_shape,
)
from raykd.methods.classification import WAVELETS
from raykd.registry import METHODS

__all__ = ["SRMethod", "SRNoDistill", "L1KD", "FeatureKD", "FAKD", "SRAttention", "MTKD"]


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


class FeatureKD(SRMethod):
    """The frame FAKD's released code puts every feature loss in (and the one raykd's ``at`` shares)::

        L = (1 - alpha) * L1(I_stu, I_GT) + alpha * L1(I_stu, I_tea) + (feature term over stage:0..2)

    ``stage:0..2`` are three points of the body of both networks (``stage_names`` of :mod:`raykd.models.edsr`,
    :mod:`raykd.models.rcan`, :mod:`raykd.models.swinir`), ``(C, h, w)`` maps at the LR patch's size; the widths
    may differ. A subclass gives :meth:`feature_loss`, the hparam that weighs it and the term's name, and adds
    that hparam to :data:`ALPHA`, the image terms' weight (FAKD's released ``--alpha 0.5``; the range ours)."""

    ALPHA: ClassVar[dict[str, Param]] = {"alpha": Float(0.5, high=1.0, search=(0.1, 0.9))}
    stages: ClassVar[tuple[int, ...]] = (0, 1, 2)
    weight: ClassVar[str]  # the hparam that weighs the feature term
    term: ClassVar[str]  # the feature term's name among the loss terms

    def student_outputs(self) -> tuple[str, ...]:
        return tuple(f"stage:{k}" for k in self.stages)

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("image", *self.student_outputs())

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        """The SR images match, and each stage is a ``(C, h, w)`` map of one ``h x w`` in student and teacher."""
        super().bind(student_shapes, teacher_shapes)
        for key in self.student_outputs():
            require_outputs(self.name, key, student_shapes, teacher_shapes)
            s, t = tuple(student_shapes[key]), tuple(teacher_shapes[key])
            if len(s) != 3 or len(t) != 3 or s[1:] != t[1:]:
                raise ValueError(f"method {self.name!r}: student and teacher {key!r} must be (C, h, w) maps of the "
                                 f"same h x w; got {s} and {t}")

    def feature_loss(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        image = student["image"]
        keys = self.student_outputs()
        feat = self.feature_loss([student[k] for k in keys], [teacher[k] for k in keys])
        return {"l1": (1.0 - p["alpha"]) * _l1(student, target),
                "kd": p["alpha"] * F.l1_loss(image, teacher["image"].detach().to(image.dtype)),
                self.term: p[self.weight] * feat}


@METHODS.register()
class FAKD(FeatureKD):
    """Feature-affinity KD (He, Dai, Lu, Jiang & Xia, "FAKD: Feature-Affinity Based Knowledge Distillation for
    Efficient Image Super-Resolution", ICIP 2020): :class:`FeatureKD` with ``w_fa * sum_l L1(A_stu^l, A_tea^l)``.

    ``A^l`` is the spatial affinity (``HW x HW`` per image, cosine similarities of positions:
    :func:`raykd.losses.sr.spatial_affinity`) of feature map ``l``; nothing is learnt to match the widths.

    Defaults are the released code's (github.com/Vincent-Hoo/Knowledge-Distillation-for-Super-resolution): its
    ``Loss`` weighs the GT term ``1 - alpha`` and the teacher term ``alpha`` (``--alpha 0.5`` in every training
    script and the README), the affinity term by the ``10*SA`` of its scripts (``--feature_distilation_type``;
    the parser's own default is ``1*SA``), over its ``--features [1,2,3]``; every distance is ``nn.L1Loss``.
    The search ranges are ours, around those values: neither the code nor the paper text available here gives
    one (the paper is closed access and could not be read).
    """

    name, weight, term = "fakd", "w_fa", "fa"
    hparams: ClassVar[dict[str, Param]] = {**FeatureKD.ALPHA, "w_fa": Float(10.0, search=(1.0, 100.0), log=True)}

    def feature_loss(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        return affinity_loss(student, teacher)


@METHODS.register()
class SRAttention(FeatureKD):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2) for SR, the ``AT`` baseline of MTKD's tables:
    :class:`FeatureKD` with ``w_at * sum_l AT(F_stu^l, F_tea^l)`` (:func:`raykd.losses.features.at_loss`: the
    L2-normalised ``mean_c |F_c|^p`` maps compared by squared distance).

    MTKD (Jiang et al., ECCV 2024) lists AT among its baselines without its settings, so this is AT put in FAKD's
    frame (the SR KD comparison MTKD follows): FAKD's GT/teacher terms and ``alpha`` 0.5, its three body features;
    the AT term with the AT paper's ``p`` 2 and ``beta`` 10^3 (``w_at``, as raykd's classification ``at``). The
    search range is ours, around that value.
    """

    name, weight, term = "at", "w_at", "at"
    hparams: ClassVar[dict[str, Param]] = {**FeatureKD.ALPHA, "w_at": Float(1000.0, search=(10.0, 10000.0), log=True),
                                           "p": Float(2.0, low_open=True)}

    def feature_loss(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        return sum(at_loss(s, t, self.params["p"]) for s, t in zip(student, teacher))


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
