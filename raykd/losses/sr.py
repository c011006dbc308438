"""Super-resolution distillation losses: MTKD's wavelet loss (Jiang et al., ECCV 2024, Sec. 3.2, stage 2) and
FAKD's spatial-affinity loss (He, Dai, Lu, Jiang & Xia, ICIP 2020; :func:`spatial_affinity`).

MTKD trains the student with ``alpha * L1(I_stu, I_GT) + L_wav(I_stu, I_MT)``, where ``I_MT`` is the knowledge
aggregator's output and

    L_wav = 1 / (3K + 1) * ( L1(LL_K^stu, LL_K^MT) + sum_{k=1..K} sum_{b in LH, HL, HH} L1(b_k^stu, b_k^MT) ).

A K-level 2-D DWT has exactly 3K + 1 subbands: the approximation (LL) of the last level only (the LL of the
earlier levels is what the next level decomposes) and the three detail bands of every level; the normalisation
``1/(3K+1)`` is the mean over them. Each ``L1`` is the mean absolute difference over that band's coefficients
(and over batch and channels), so bands of every level weigh the same whatever their size.

The official code (YuxuanJJ/MTKD, ``dwtLoss`` with pytorch_wavelets' ``DWTForward(mode="zero")``) differs in two
details that look unintended and are not followed: it sums the per-level means of the three detail bands
(weight 1/3 each) plus the LL term without the ``1/(3K+1)`` factor, and its LL term indexes one batch element.
For Haar on even sides, ``zero``, ``symmetric`` and ``periodization`` give identical coefficients.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from raykd.losses.wavelet import WaveletLike, wavedec2

__all__ = ["wavelet_loss", "mtkd_loss", "spatial_affinity", "affinity_loss", "AFFINITY_EPS"]

# FAKD's released code adds 1e-7 to each position's channel norm before dividing (feature_transformation.py)
AFFINITY_EPS = 1e-7


def _check_pair(fn: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{fn}: {a_name} {tuple(a.shape)} and {b_name} {tuple(b.shape)} must "
                         "have the same (B, C, H, W) shape")


def wavelet_loss(student: Tensor, target: Tensor, levels: int = 1, wavelet: WaveletLike = "haar",
                 mode: str = "periodization") -> Tensor:
    """MTKD's wavelet loss ``1/(3K+1) * sum over the 3K+1 subbands of a K-level 2-D DWT of L1(stu, target)``.

    Args:
        student: ``(B, C, H, W)`` student output.
        target: same shape; the aggregated teacher image. It is detached, so gradients reach the student only.
        levels: ``K``, the number of DWT levels (at most ``pywt.dwt_max_level`` of the smaller side).
        wavelet: PyWavelets name or ``pywt.Wavelet`` (the paper uses Haar).
        mode: DWT boundary mode (:data:`raykd.losses.wavelet.MODES`).

    The transform runs in float32 even under autocast: coefficients are sums of pixels, and in half precision
    their rounding error is as large as the student-teacher differences being measured.
    """
    _check_pair("wavelet_loss", "student", student, "target", target)
    try:
        k = operator.index(levels)  # also numpy integers, as sweeps produce
    except TypeError:
        k = 0
    if k < 1:
        raise ValueError(f"wavelet_loss: levels must be an integer >= 1, got {levels!r}")
    with torch.autocast(student.device.type, enabled=False):
        both = torch.cat([student.float(), target.detach().float()])
        coeffs = wavedec2(both, wavelet, level=k, mode=mode)
        bands = [coeffs[0], *(band for detail in coeffs[1:] for band in detail)]
        n = student.shape[0]
        total = sum(F.l1_loss(band[:n], band[n:]) for band in bands)
    return total / len(bands)


def mtkd_loss(student: Tensor, aggregated: Tensor, hr: Tensor, alpha: float = 0.1, levels: int = 1,
              wavelet: WaveletLike = "haar") -> Tensor:
    """MTKD stage-2 objective ``alpha * L1(I_stu, I_GT) + L_wav(I_stu, I_MT)`` (paper default ``alpha = 0.1``).

    ``aggregated`` (the knowledge aggregator's output) and ``hr`` (the ground truth) are detached.
    """
    _check_pair("mtkd_loss", "student", student, "hr", hr)
    return alpha * F.l1_loss(student, hr.detach()) + wavelet_loss(student, aggregated, levels, wavelet)


def spatial_affinity(features: Tensor, eps: float = AFFINITY_EPS) -> Tensor:
    """FAKD's spatial affinity ``A = F~^T F~`` of ``(B, C, H, W)`` features: ``(B, HW, HW)``, one per image.

    ``F~`` is the feature flattened to ``(C, HW)`` (row-major positions) with every position's channel vector
    divided by its L2 norm plus ``eps``, so ``A[i, j]`` is the cosine similarity of positions ``i`` and ``j``:
    its size depends on the spatial size only, and a student and a teacher of different widths compare
    directly. The form and ``eps`` are those of ``spatial_similarity`` in the released code
    (github.com/Vincent-Hoo/Knowledge-Distillation-for-Super-resolution, ``code/feature_transformation.py``);
    the paper's own text (ICIP 2020, closed access) was not available to check its equation numbers.
    Runs in float32 even under autocast, as :func:`wavelet_loss` does. Memory grows as ``B * (HW)^2``: a batch of
    16 LR patches of 64 x 64 (MTKD's stage 2) makes a 1 GiB matrix per layer and network (16 * 4096^2 * 4 bytes).
    """
    if features.dim() != 4:
        raise ValueError(f"spatial_affinity: features {tuple(features.shape)} must be (B, C, H, W)")
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().flatten(2)  # (B, C, HW)
        unit = flat / (flat.norm(dim=1, keepdim=True) + eps)
        return unit.transpose(1, 2).bmm(unit)


def affinity_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """FAKD's structural term ``sum_l L1(A_stu^l, A_tea^l)`` over paired feature maps (un-weighted).

    Each ``L1`` is the mean absolute difference over the ``B * HW * HW`` affinity entries (the released code's
    ``nn.L1Loss`` on the ``(B, 1, HW, HW)`` matrices), summed over the layers (its ``FeatureLoss``). Student and
    teacher maps of a layer must agree in batch and spatial size; their channels may differ. Teacher maps are
    detached.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"affinity_loss: needs as many student as teacher feature maps, at least one; got "
                         f"{len(student)} and {len(teacher)}")
    total = student[0].new_zeros((), dtype=torch.float32)
    for k, (s, t) in enumerate(zip(student, teacher)):
        if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"affinity_loss: layer {k}: student {tuple(s.shape)} and teacher {tuple(t.shape)} must "
                             "be (B, C, H, W) of the same B, H and W")
        total = total + F.l1_loss(spatial_affinity(s), spatial_affinity(t.detach()))
    return total
