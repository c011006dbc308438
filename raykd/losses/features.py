"""Feature distillation losses: DFD (penultimate-feature L2), FitNet hints and attention transfer (AT).

Teacher features are detached in every loss, so gradients reach the student (and its regressor) only.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["dfd_loss", "HintRegressor", "hint_loss", "attention_map", "at_loss"]


def dfd_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Deep feature distillation for low-resolution recognition (Zhu et al., ICASSP 2019; seed 002).

    ``1/2 * ||f_s(x_lr) - f_t(x_hr)||^2`` on the penultimate features (the input of the classifier head):
    the squared error is summed over all feature dimensions of a sample and averaged over the batch.
    """
    if f_s.shape != f_t.shape:
        raise ValueError(
            f"DFD needs student and teacher penultimate features of the same shape "
            f"(same architecture on LR and HR input); got {tuple(f_s.shape)} and {tuple(f_t.shape)}"
        )
    diff = (f_s - f_t.detach()).flatten(1)
    return 0.5 * diff.pow(2).sum(dim=1).mean()


class HintRegressor(nn.Module):
    """FitNet regressor ``r`` mapping a student (guided-layer) feature onto the teacher's hint width.

    Romero et al., ICLR 2015, sec. 2.2 (eq. 3) use a convolutional regressor; here a 1x1 conv + BatchNorm for
    per-sample shapes ``(C, H, W)``, and a linear layer on the last dimension for flat ``(D,)`` or token
    ``(N, D)`` features. Shapes are per sample (no batch dimension).
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 2, 3):
            raise ValueError(
                f"FitNet hint needs student and teacher features of the same rank, "
                f"(D,), (N, D) or (C, H, W) per sample; got {tuple(student_shape)} and {tuple(teacher_shape)}"
            )
        if len(student_shape) == 3:
            self.proj: nn.Module = nn.Sequential(
                nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1, bias=False),
                nn.BatchNorm2d(teacher_shape[0]),
            )
        else:
            self.proj = nn.Linear(student_shape[-1], teacher_shape[-1])

    def forward(self, f_s: Tensor) -> Tensor:
        return self.proj(f_s)


def hint_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNet hint loss (Romero et al., ICLR 2015, eq. 3) as the mean squared error ``mean((r(f_s) - f_t)^2)``.

    ``f_s`` is the already-regressed student feature. The paper's ``1/2`` and the sum are folded into the
    method's weight (mdistiller's convention, weight 100). If spatial sizes of ``(B, C, H, W)`` maps differ,
    both are adaptive-average-pooled to the smaller size per side, so the teacher is never upsampled.
    """
    f_t = f_t.detach()
    if f_s.dim() == 4 and f_t.dim() == 4 and f_s.shape[-2:] != f_t.shape[-2:]:
        size = (min(f_s.shape[-2], f_t.shape[-2]), min(f_s.shape[-1], f_t.shape[-1]))
        f_s = F.adaptive_avg_pool2d(f_s, size)
        f_t = F.adaptive_avg_pool2d(f_t, size)
    if f_s.shape != f_t.shape:
        raise ValueError(
            f"regressed student hint {tuple(f_s.shape)} cannot be compared with teacher "
            f"hint {tuple(f_t.shape)}; the regressor must map to the teacher's width"
        )
    return F.mse_loss(f_s, f_t)


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Activation-based spatial attention (Zagoruyko & Komodakis, ICLR 2017, sec. 3.1): ``mean_c |f_c|^p``.

    ``f`` is ``(B, C, H, W)``; returns the un-normalised map ``(B, H, W)``.
    """
    if f.dim() != 4:
        raise ValueError(
            f"attention transfer needs (batch, channels, H, W) feature maps, "
            f"got shape {tuple(f.shape)}"
        )
    return f.abs().pow(p).mean(dim=1)


def at_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer loss (Zagoruyko & Komodakis, ICLR 2017, eq. 2) for one pair of feature maps.

    ``Q = vec(attention_map(f, p))`` is L2-normalised per sample and the loss is the mean over batch and
    positions of ``(Q_s - Q_t)^2``; the paper's ``beta / 2`` and its use of the (unsquared) p-norm of the
    difference are absorbed into the method's weight (mdistiller's convention, weight 1000). Channel counts
    may differ. If spatial sizes differ, the student's map is bilinearly resized to the teacher's size before
    normalisation.
    """
    a_s = attention_map(f_s, p)
    a_t = attention_map(f_t.detach(), p)
    if a_s.shape[-2:] != a_t.shape[-2:]:
        a_s = F.interpolate(a_s.unsqueeze(1), size=a_t.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    q_s = F.normalize(a_s.flatten(1), dim=1)
    q_t = F.normalize(a_t.flatten(1), dim=1)
    return (q_s - q_t).pow(2).mean()
