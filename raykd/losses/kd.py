"""Logit distillation losses: Hinton KD, Decoupled KD (DKD) and Multi-level Logit Distillation (MLKD).

Both take raw logits ``(B, C)``; the teacher's logits are detached, so gradients reach the student only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kd_loss", "dkd_terms", "dkd_loss", "mlkd_terms", "mlkd_kept_fractions", "MLKD_TEMPERATURES"]


def _check_logits(logits_s: Tensor, logits_t: Tensor, T: float) -> None:
    if logits_s.dim() != 2 or logits_s.shape != logits_t.shape:
        raise ValueError(
            f"logits must both be (batch, classes) of the same shape; "
            f"got student {tuple(logits_s.shape)} and teacher {tuple(logits_t.shape)}"
        )
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")


def kd_loss(logits_s: Tensor, logits_t: Tensor, T: float = 4.0) -> Tensor:
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", sec. 2.

    ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, KL summed over classes and averaged over the batch.
    The ``T^2`` factor keeps the soft-target gradients on the same scale as the hard-label ones when ``T``
    changes (sec. 2, last paragraph).
    """
    _check_logits(logits_s, logits_t, T)
    log_p_s = F.log_softmax(logits_s / T, dim=1)
    log_p_t = F.log_softmax(logits_t.detach() / T, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return kl.mean() * T**2


def _binary_kl(p_t: Tensor, p_s: Tensor) -> Tensor:
    """KL(b_t || b_s) between the (target, non-target) binary distributions, per sample."""
    eps = torch.finfo(p_s.dtype).tiny
    return (p_t * (p_t.clamp_min(eps).log() - p_s.clamp_min(eps).log())).sum(dim=1)


def dkd_terms(logits_s: Tensor, logits_t: Tensor, target: Tensor, T: float = 4.0) -> tuple[Tensor, Tensor]:
    """The two unweighted parts of Decoupled KD (Zhao et al., CVPR 2022, sec. 3.1), each ``T^2``-scaled.

    Returns ``(tckd, nckd)``, batch means, the terms of the paper's reformulation
    ``KD = TCKD + (1 - p_target^T) * NCKD`` (eq. 5-6):

    - TCKD = ``KL(b^T || b^S)`` with the binary ``b = [p_target, p_non-target]`` from ``softmax(z / T)``.
    - NCKD = ``KL(p_hat^T || p_hat^S)`` over the non-target classes only, ``p_hat`` being the softmax of
      ``z / T`` with the target logit removed, i.e. renormalised among the non-target classes.

    ``target`` holds class indices ``(B,)``.
    """
    _check_logits(logits_s, logits_t, T)
    if target.shape != logits_s.shape[:1]:
        raise ValueError(
            f"target must be class indices of shape ({logits_s.shape[0]},), "
            f"got {tuple(target.shape)}"
        )
    z_s = logits_s / T
    z_t = logits_t.detach() / T
    gt = F.one_hot(target.long(), num_classes=z_s.shape[1]).bool()

    p_s = F.softmax(z_s, dim=1)
    p_t = F.softmax(z_t, dim=1)
    # Summing the non-target mass (rather than 1 - p_target) keeps it accurate when p_target is close to 1.
    b_s = torch.stack([(p_s * gt).sum(dim=1), (p_s * ~gt).sum(dim=1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(dim=1), (p_t * ~gt).sum(dim=1)], dim=1)
    tckd = _binary_kl(b_t, b_s).mean() * T**2

    # Dropping the target column leaves exactly the non-target softmax p_hat.
    B, C = z_s.shape
    z_s_nt = z_s[~gt].view(B, C - 1)
    z_t_nt = z_t[~gt].view(B, C - 1)
    log_q_s = F.log_softmax(z_s_nt, dim=1)
    log_q_t = F.log_softmax(z_t_nt, dim=1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="none", log_target=True).sum(dim=1).mean() * T**2
    return tckd, nckd


def dkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022, eq. 7): ``alpha * TCKD + beta * NCKD`` (see :func:`dkd_terms`).

    Defaults are the paper's CIFAR-100 settings (alpha 1, beta 8, T 4). The linear warm-up of the whole term
    (paper: 20 epochs) is applied by the ``dkd`` method, not here.
    """
    tckd, nckd = dkd_terms(logits_s, logits_t, target, T)
    return alpha * tckd + beta * nckd


MLKD_TEMPERATURES = (2.0, 3.0, 4.0, 5.0, 6.0)
"""MLKD's temperatures: the released code (Jin-Ying/Multi-Level-Logit-Distillation, ``mdistiller/distillers/
MLKD.py``) applies every term at its config's temperature 4 and at 3, 5, 2 and 6 (the paper's "prediction
augmentation", sec. 3.2, names no values)."""


def mlkd_terms(logits_s: Tensor, logits_t: Tensor, temperatures: tuple[float, ...] = MLKD_TEMPERATURES
               ) -> tuple[Tensor, Tensor, Tensor]:
    """The three alignments of MLKD (Jin, Wang & Lin, "Multi-level Logit Distillation", CVPR 2023, Sec. 3:
    "multi-level alignment" of the predictions that "prediction augmentation" makes at several temperatures),
    each summed over ``temperatures`` (the predictions ``p = softmax(z / T)``, ``(B, C)``):

    - instance level: ``T^2 * KL(p_t || p_s)`` per sample, averaged over the batch (Hinton's KD);
    - batch level: the ``B x B`` Gram matrices ``G = p p^T`` of the batch's predictions (sample-to-sample
      similarity), ``||G_t - G_s||_F^2 / B``;
    - class level: the ``C x C`` class-correlation matrices ``M = p^T p``, ``||M_t - M_s||_F^2 / C``.

    The normalisations (``/ B``, ``/ C``) and the ``T^2`` are the released code's (its ``bc_loss``, ``cc_loss`` and
    ``kd_loss``). The class-level term is not divided by the batch: it grows as ``B^2 / C``, about 40 times larger
    at 10 classes and batch 128 than at CIFAR-100's 100 classes and batch 64.

    Returns ``(instance, batch, class)``. The released code also masks samples by the teacher's confidence
    (:func:`mlkd_kept_fractions`, applied by the ``mlkd`` method) and adds a strongly augmented second view, which
    raykd's one-view pipeline has not.
    """
    if not temperatures:
        raise ValueError("MLKD needs at least one temperature, e.g. (2, 3, 4, 5, 6)")
    _check_logits(logits_s, logits_t, min(temperatures))
    batch, classes = logits_s.shape
    instance = batch_level = class_level = logits_s.new_zeros(())
    for T in temperatures:
        instance = instance + kd_loss(logits_s, logits_t, T)
        p_s = F.softmax(logits_s / T, dim=1)
        p_t = F.softmax(logits_t.detach() / T, dim=1)
        batch_level = batch_level + (p_t @ p_t.T - p_s @ p_s.T).pow(2).sum() / batch
        class_level = class_level + (p_t.T @ p_t - p_s.T @ p_s).pow(2).sum() / classes
    return instance, batch_level, class_level


def mlkd_kept_fractions(logits_t: Tensor) -> tuple[Tensor, Tensor]:
    """What MLKD's released code keeps of a batch with its confidence masks (``mdistiller/distillers/KD_ours.py``):
    the share of samples whose teacher confidence (top softmax probability at T = 1) is at most the batch's median,
    and the share of classes whose summed teacher probability over the batch is at most the median of those.

    The released code multiplies each batch-reduced loss by its mask and averages it (``(loss * mask).mean()``), so
    the masks scale the instance and batch terms by the first share and the class term by the second: about 1/2
    each (exactly 1/2 for an even count without ties). Medians interpolate like its ``np.percentile(..., 50)``."""
    p_t = F.softmax(logits_t.detach().float(), dim=1)
    confidence, class_confidence = p_t.max(dim=1).values, p_t.sum(dim=0)
    samples = (confidence <= torch.quantile(confidence, 0.5)).float().mean()
    classes = (class_confidence <= torch.quantile(class_confidence, 0.5)).float().mean()
    return samples, classes
