"""Classification distillation methods: none, kd, dkd, mlkd, figkd, dfd, fitnet, at.

Defaults follow the papers, or mdistiller's CIFAR-100 configs (megvii-research/mdistiller,
``mdistiller/engine/cfg.py``) where a paper leaves them to the implementation; each class says which.
"""
from __future__ import annotations

from typing import Any, ClassVar

import pywt
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.losses.features import HintRegressor, at_loss, dfd_loss, hint_loss
from raykd.losses.figkd import FIGKD_BANDS, FIGKD_DISTANCES, FIGKD_REDUCTIONS, FiGKDLoss
from raykd.losses.kd import MLKD_TEMPERATURES, dkd_terms, kd_loss, mlkd_kept_fractions, mlkd_terms
from raykd.methods.base import (Choice, Float, Int, Method, Outputs, Param, Shapes, require_outputs,
                                require_same_shape)
from raykd.registry import METHODS

__all__ = ["NoDistill", "KD", "DKD", "MLKD", "FiGKD", "DFD", "FitNet", "AT"]

# the temperature of softmax-based losses: > 0, searched over the range the KD literature uses
TEMPERATURE = Float(4.0, low=0.0, low_open=True, search=(1.0, 8.0))
WAVELETS = tuple(pywt.wavelist(kind="discrete"))


def _ce(student: Outputs, target: Tensor) -> Tensor:
    return F.cross_entropy(student["logits"], target)


class _LogitMethod(Method):
    """Methods that compare student and teacher logits, which must have one shape."""

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        require_same_shape(self.name, "logits", student_shapes, teacher_shapes)


@METHODS.register()
class NoDistill(Method):
    """The student alone, trained with cross-entropy (the ``none`` baseline)."""

    name = "none"

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        return {"ce": _ce(student, target)}


@METHODS.register()
class KD(_LogitMethod):
    """Hinton et al. 2015: ``w_ce * CE + w_kd * T^2 KL`` (:func:`raykd.losses.kd.kd_loss`).

    Defaults from mdistiller's KD config: ``w_ce`` 0.1, ``w_kd`` 0.9, ``T`` 4 (Hinton et al. advise a much
    lower weight on the hard-label term).
    """

    name = "kd"
    hparams: ClassVar[dict[str, Param]] = {"w_ce": Float(0.1), "w_kd": Float(0.9, search=(0.1, 1.0)),
                                           "T": TEMPERATURE}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"ce": p["w_ce"] * _ce(student, target),
                "kd": p["w_kd"] * kd_loss(student["logits"], teacher["logits"], p["T"])}


@METHODS.register()
class DKD(_LogitMethod):
    """Decoupled KD (Zhao et al., CVPR 2022, eq. 7): ``w_ce * CE + warm * (alpha * TCKD + beta * NCKD)``.

    ``warm = min(epoch / warmup_epochs, 1)`` ramps the distillation terms in linearly (``warmup_epochs = 0``
    disables it). Defaults are the paper's CIFAR-100 settings (also mdistiller's): alpha 1, beta 8, T 4,
    20 warm-up epochs, CE weight 1. Returns ``tckd`` and ``nckd`` as separate terms so both can be logged.
    """

    name = "dkd"
    hparams: ClassVar[dict[str, Param]] = {
        "w_ce": Float(1.0), "alpha": Float(1.0, search=(0.25, 4.0), log=True),
        "beta": Float(8.0, search=(1.0, 16.0), log=True), "T": TEMPERATURE, "warmup_epochs": Int(20)}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        warm = min(epoch / p["warmup_epochs"], 1.0) if p["warmup_epochs"] > 0 else 1.0
        tckd, nckd = dkd_terms(student["logits"], teacher["logits"], target, p["T"])
        return {"ce": p["w_ce"] * _ce(student, target), "tckd": warm * p["alpha"] * tckd,
                "nckd": warm * p["beta"] * nckd}


@METHODS.register()
class MLKD(_LogitMethod):
    """Multi-level logit distillation (Jin, Wang & Lin, CVPR 2023): ``w_ce * CE + w_kd * (f_s * L_ins + f_s *
    L_batch + w_class * f_c * L_class)``, each term summed over MLKD's temperatures (:func:`raykd.losses.kd.
    mlkd_terms`), ``f_s``, ``f_c`` the shares its confidence masks keep (:func:`raykd.losses.kd.mlkd_kept_fractions`).

    Defaults: the released code's temperatures 2-6 (:data:`raykd.losses.kd.MLKD_TEMPERATURES`), its masks on the
    weak view's terms (its second, strongly augmented view is not in raykd's one-view pipeline) and its loss weights,
    which it reads from the KD config (``cfg.KD.LOSS.CE_WEIGHT``/``KD_WEIGHT``: mdistiller's 0.1 and 0.9; one weight
    for all three terms). The sweep searches ``w_kd`` over a factor of about 4 either side (log-uniform).

    ``w_class`` (not in the paper: 1 is the released code) rescales the class term alone. Its released normalisation
    (``/ C`` of a ``C x C`` matrix of batch sums) grows as ``(B / C)^2``: 400 times larger at 10 classes and batch
    128 than at CIFAR-100's 100 classes and batch 64, where it swamps the cross-entropy and the student stays at
    chance (measured: ``bench/reproduce_cls.py --setting gap --methods mlkd``, 10.00% top-1 after 12 epochs).
    ``w_class = (64 / B)^2 * (C / 100)^2`` gives it the magnitude it had in the paper's CIFAR-100 runs. Returns the
    three terms separately so each can be logged.
    """

    name = "mlkd"
    hparams: ClassVar[dict[str, Param]] = {"w_ce": Float(0.1),
                                           "w_kd": Float(0.9, search=(0.2, 4.0), log=True),
                                           "w_class": Float(1.0)}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        instance, batch, cls = mlkd_terms(student["logits"], teacher["logits"], MLKD_TEMPERATURES)
        samples, classes = mlkd_kept_fractions(teacher["logits"])
        return {"ce": p["w_ce"] * _ce(student, target), "mlkd_instance": p["w_kd"] * samples * instance,
                "mlkd_batch": p["w_kd"] * samples * batch, "mlkd_class": p["w_kd"] * p["w_class"] * classes * cls}


@METHODS.register()
class FiGKD(_LogitMethod):
    """FiGKD (Kim 2025, arXiv:2505.11897): ``w_ce * CE + w_hf * D(HF(DWT(M(z_s / T))), HF(DWT(M(z_t / T))))``.

    See :mod:`raykd.losses.figkd` for every knob. ``T`` and ``w_hf`` are confounded (no softmax: the term scales as
    ``1 / T^2``), so the sweep searches ``w_hf`` and leaves ``T`` at 1. ``bands`` reaches the paper's Table VI
    ablation: ``"high"`` (LH, HL, HH: the method), ``"low"`` (the approximation only) or ``"all"``; ``reduction``
    ``"mean"`` (default) or ``"sample"`` (each sample's sum: :func:`raykd.losses.figkd.figkd_hf_loss` says why the
    default is the mean), fixed for a sweep since it rescales ``w_hf``. The paper's
    weights could not be retrieved when this was written; the defaults (``w_ce`` 1, ``w_hf`` 1, ``T`` 1, one Haar
    level, MSE) are neutral starting points for a sweep, not published values.
    """

    name = "figkd"
    hparams: ClassVar[dict[str, Param]] = {
        "w_ce": Float(1.0, search=(0.1, 1.0)), "w_hf": Float(1.0, search=(0.1, 10.0), log=True),
        "T": Float(1.0, low_open=True), "level": Int(1, low=1, grid=(1, 2)),
        "wavelet": Choice("haar", WAVELETS, search=("haar", "db2")),
        "distance": Choice("mse", FIGKD_DISTANCES, search=FIGKD_DISTANCES),
        "bands": Choice("high", FIGKD_BANDS), "reduction": Choice("mean", FIGKD_REDUCTIONS)}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.hf = self._loss()

    def _loss(self, num_classes: int | None = None) -> FiGKDLoss:
        p = self.params
        return FiGKDLoss(T=p["T"], wavelet=p["wavelet"], level=p["level"], distance=p["distance"], bands=p["bands"],
                         reduction=p["reduction"], num_classes=num_classes)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        """The logits' shapes must match, and ``level`` must fit their near-square matrix."""
        super().bind(student_shapes, teacher_shapes)
        self._loss(student_shapes["logits"][0])

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"ce": p["w_ce"] * _ce(student, target),
                "hf": p["w_hf"] * self.hf(student["logits"], teacher["logits"])}


@METHODS.register()
class DFD(Method):
    """Deep feature distillation for LR recognition (Zhu et al., ICASSP 2019; seed 002).

    ``w_ce * CE + lambda * 1/2 ||f_s(x_lr) - f_t(x_hr)||^2`` on penultimate features
    (:func:`raykd.losses.features.dfd_loss`); the student sees the LR input, the teacher the HR one.
    ``lambda`` defaults to 2: the paper reports its best results around lambda = 2.

    The paper distils between copies of one architecture, so the features have one width. When a sweep pairs
    networks of different widths, a learned linear map (FitNet's regressor) takes the student's feature to the
    teacher's width first; with equal widths there is none and the loss is the paper's.
    """

    name = "dfd"
    student_input = "lr"
    hparams: ClassVar[dict[str, Param]] = {"w_ce": Float(1.0), "lambda": Float(2.0, search=(0.01, 10.0), log=True)}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("penultimate",)

    def student_outputs(self) -> tuple[str, ...]:
        return ("penultimate",)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        require_outputs(self.name, "penultimate", student_shapes, teacher_shapes)
        s, t = tuple(student_shapes["penultimate"]), tuple(teacher_shapes["penultimate"])
        self.projection = HintRegressor(s, t) if s != t else nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {"ce": p["w_ce"] * _ce(student, target),
                "dfd": p["lambda"] * dfd_loss(self.projection(student["penultimate"]), teacher["penultimate"])}


@METHODS.register()
class FitNet(Method):
    """FitNets (Romero et al., ICLR 2015, eq. 3): ``w_ce * CE + w_hint * MSE(r(f_s), f_t)`` at one stage.

    ``stage`` indexes the network's stages like a Python list (default 1: the middle stage of a 3-stage CIFAR
    ResNet, the guided layer mdistiller uses). The regressor ``r`` is created in :meth:`bind` from the probed
    shapes and is trained with the student. Single-stage training (the paper trains the hint first, then KD)
    follows mdistiller; ``w_hint`` 100 and ``w_ce`` 1 are mdistiller's defaults.
    """

    name = "fitnet"
    hparams: ClassVar[dict[str, Param]] = {"w_ce": Float(1.0), "w_hint": Float(100.0), "stage": Int(1, low=None)}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.regressor: HintRegressor | None = None

    @property
    def _key(self) -> str:
        return f"stage:{self.params['stage']}"

    def teacher_outputs(self) -> tuple[str, ...]:
        return (self._key,)

    def student_outputs(self) -> tuple[str, ...]:
        return (self._key,)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        require_outputs(self.name, self._key, student_shapes, teacher_shapes)
        self.regressor = HintRegressor(tuple(student_shapes[self._key]), tuple(teacher_shapes[self._key]))

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        if self.regressor is None:
            raise RuntimeError("method 'fitnet': call bind(student_shapes, teacher_shapes) before the first forward")
        p = self.params
        return {"ce": p["w_ce"] * _ce(student, target),
                "hint": p["w_hint"] * hint_loss(self.regressor(student[self._key]), teacher[self._key])}


@METHODS.register()
class AT(Method):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2): ``w_ce * CE + w_at * sum_j AT_j``.

    The sum runs over the outputs of the last three stages (``stage:-3 .. stage:-1``: every group of a
    3-stage CIFAR ResNet/WRN, as in the paper). Defaults ``p`` 2, ``w_at`` 1000, ``w_ce`` 1 are the paper's
    ``beta = 10^3`` and mdistiller's settings.
    """

    name = "at"
    hparams: ClassVar[dict[str, Param]] = {"w_ce": Float(1.0), "w_at": Float(1000.0),
                                           "p": Float(2.0, low_open=True)}
    stages: ClassVar[tuple[int, ...]] = (-3, -2, -1)

    def teacher_outputs(self) -> tuple[str, ...]:
        return tuple(f"stage:{k}" for k in self.stages)

    def student_outputs(self) -> tuple[str, ...]:
        return self.teacher_outputs()

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        at = sum(at_loss(student[key], teacher[key], p["p"]) for key in self.teacher_outputs())
        return {"ce": p["w_ce"] * _ce(student, target), "at": p["w_at"] * at}
