"""FiGKD: Fine-Grained Knowledge Distillation via High-Frequency Detail Transfer (Kim, arXiv:2505.11897).

The class-logit vector is laid out as a near-square 2-D "image", decomposed with a 2-D discrete wavelet
transform, and only the high-frequency (detail) subbands of the student are pulled towards the teacher's; the
low-frequency approximation, which the paper argues is already conveyed by the ground-truth CE term, is left
free. Total objective (the ``figkd`` method): ``w_ce * CE + w_hf * D(HF(DWT(z_s / T)), HF(DWT(z_t / T)))``.
"""
from __future__ import annotations

import math

import pywt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.losses.wavelet import wavedec2

__all__ = ["logits_to_matrix", "figkd_hf_loss", "FiGKDLoss", "FIGKD_DISTANCES"]

FIGKD_DISTANCES = ("mse", "l1")


def logits_to_matrix(z: Tensor, level: int = 1, wavelet: str = "haar") -> Tensor:
    """Reshape logits ``(B, C)`` into a zero-padded near-square matrix ``(B, H', W')`` for a 2-D DWT.

    ``H = floor(sqrt(C))`` and ``W = ceil(C / H)``; the ``C`` logits fill the ``H x W`` grid row-major and the
    remaining ``H * W - C`` cells are zero. The grid is then zero-padded at the bottom and right so that both
    sides divide by ``2 ** level``, which makes every decomposition level halve each side exactly (Haar and
    ``periodization`` mode need even sides). ``C = 100`` gives 10 x 10, ``C = 200`` gives 14 x 16 and
    ``C = 1000`` gives 32 x 34 at ``level=1``; ``C < 4`` still yields at least ``2**level x 2**level``.

    A wavelet longer than Haar needs more room: a side must be at least ``(filter_length - 1) * 2**level`` for
    ``level`` levels (PyWavelets' ``dwt_max_level``), so small grids are zero-padded up to that too (C = 10 with
    ``db2`` at level 1 gives 6 x 6 instead of 4 x 4). The extra zeros carry no logits, so the matched detail
    coefficients still describe the logits alone; Haar grids are unchanged.
    """
    if z.dim() != 2:
        raise ValueError(f"raykd/losses/figkd.py: logits must be (batch, classes), got shape {tuple(z.shape)}")
    if level < 1:
        raise ValueError(f"raykd/losses/figkd.py: level must be >= 1, got {level}")
    B, C = z.shape
    h = math.isqrt(C)
    w = math.ceil(C / h)
    grid = F.pad(z, (0, h * w - C)).view(B, h, w)
    m = 2**level
    least = (pywt.Wavelet(wavelet).dec_len - 1) * m

    def side(n: int) -> int:
        n = max(n, least)
        return n + (-n % m)

    return F.pad(grid, (0, side(w) - w, 0, side(h) - h))


def _check_options(T: float, wavelet: str, level: int, distance: str) -> None:
    if T <= 0:
        raise ValueError(f"raykd/losses/figkd.py: temperature T must be > 0, got {T}")
    if level < 1:
        raise ValueError(f"raykd/losses/figkd.py: level must be an integer >= 1, got {level}")
    if distance not in FIGKD_DISTANCES:
        raise ValueError(f"raykd/losses/figkd.py: distance must be one of {FIGKD_DISTANCES}, got {distance!r}")
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(
            f"raykd/losses/figkd.py: wavelet {wavelet!r} is not a discrete PyWavelets wavelet "
            f"(e.g. 'haar', 'db2', 'sym4'; see pywt.wavelist(kind='discrete'))"
        )


def figkd_hf_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    T: float = 1.0,
    wavelet: str = "haar",
    level: int = 1,
    distance: str = "mse",
    mode: str = "periodization",
) -> Tensor:
    """FiGKD high-frequency distillation term ``D(HF(DWT(z_s / T)), HF(DWT(z_t / T)))``.

    Keywords:
        T: temperature dividing both logit vectors before the transform; scales the detail coefficients
            linearly (no softmax is involved, so no ``T^2`` compensation is applied). The FiGKD paper's exact
            value could not be retrieved here; 1.0 (raw logits) is the neutral default and a sweep knob.
        wavelet: any discrete PyWavelets filter bank name; ``"haar"`` is the paper's choice.
        level: number of decomposition levels; the detail subbands of *every* level are matched.
        distance: ``"mse"`` (mean squared error) or ``"l1"`` (mean absolute error).
        mode: signal-extension mode of the DWT; ``"periodization"`` keeps each level exactly half-size, so the
            subbands tile the padded logit matrix (see :func:`logits_to_matrix`).

    The distance is the mean over the coefficients of each detail subband (cH, cV, cD at each level), then
    averaged over the ``3 * level`` subbands so that coarse levels, which have fewer coefficients, count as
    much as fine ones. The approximation subband cA is never matched. The teacher's logits are detached.
    """
    _check_options(T, wavelet, level, distance)
    if logits_s.shape != logits_t.shape:
        raise ValueError(
            f"raykd/losses/figkd.py: student and teacher logits differ in shape: "
            f"{tuple(logits_s.shape)} vs {tuple(logits_t.shape)}"
        )
    coeffs_s = wavedec2(logits_to_matrix(logits_s / T, level, wavelet), wavelet=wavelet, level=level, mode=mode)
    coeffs_t = wavedec2(logits_to_matrix(logits_t.detach() / T, level, wavelet), wavelet=wavelet, level=level,
                        mode=mode)
    dist = F.mse_loss if distance == "mse" else F.l1_loss
    terms = [
        dist(band_s, band_t)
        for details_s, details_t in zip(coeffs_s[1:], coeffs_t[1:])
        for band_s, band_t in zip(details_s, details_t)
    ]
    return torch.stack(terms).mean()


class FiGKDLoss(nn.Module):
    """Module form of :func:`figkd_hf_loss` that validates its options once, at construction."""

    def __init__(
        self,
        T: float = 1.0,
        wavelet: str = "haar",
        level: int = 1,
        distance: str = "mse",
        mode: str = "periodization",
    ) -> None:
        super().__init__()
        _check_options(T, wavelet, level, distance)
        self.T, self.wavelet, self.level, self.distance, self.mode = T, wavelet, level, distance, mode

    def forward(self, logits_s: Tensor, logits_t: Tensor) -> Tensor:
        return figkd_hf_loss(logits_s, logits_t, self.T, self.wavelet, self.level, self.distance, self.mode)

    def extra_repr(self) -> str:
        return (
            f"T={self.T}, wavelet={self.wavelet!r}, level={self.level}, "
            f"distance={self.distance!r}, mode={self.mode!r}"
        )
