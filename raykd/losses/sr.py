"""Super-resolution distillation losses: MTKD's wavelet loss (Jiang et al., ECCV 2024, Sec. 3.2, stage 2).

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

import torch
import torch.nn.functional as F
from torch import Tensor

from raykd.losses.wavelet import WaveletLike, wavedec2

__all__ = ["wavelet_loss", "mtkd_loss"]


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
