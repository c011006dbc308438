"""ViMD: Vision Mamba distillation for low-resolution fine-grained classification (seed 000).

Chen et al., "Vision Mamba Distillation for Low-resolution Fine-grained Image Classification", IEEE SPL 2025
(arXiv:2411.17980), Sec. II-B, the multi-level Mamba distillation loss:

    L = CE(z_s, y) + alpha * (KL_T(z_s, z_t) + beta * sum_{i=1..N} ||H_i^t - H_i^s||^2)

between HRVM-Net (the teacher: a Vim on the HR image) and SRVM-Net (the student: SR sub-network + the same Vim
configuration on the LR image, :mod:`raykd.models.srvm`), with ``H_i`` the hidden state after encoder layer ``i``
of all ``N`` layers. Paper settings: ``T = 4``, ``alpha = 1``, ``beta = 20``.

Normalisation (the letter gives the formula only; it is fixed here from the authors' code, boa2004plaust/ViMD,
``vimd/losses.py``):

- ``KL_T`` is ``DistillKL``: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` summed over classes and averaged over
  the batch, i.e. Hinton's term, :func:`raykd.losses.kd.kd_loss`;
- ``||H_i^t - H_i^s||^2`` is ``HSMSE``: ``F.mse_loss`` per layer, the squared error *averaged* over batch, tokens
  and channels. The per-layer means are summed over the ``N`` layers, as the paper's sum says. (The released
  ``HSMSE`` loop assigns instead of accumulating, so it keeps only the last layer's term; that reads as a slip
  against the paper's own equation, and raykd follows the equation.)
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from raykd.losses.kd import kd_loss
from raykd.methods.base import Method, Outputs, Shapes, register_method

__all__ = ["ViMD", "hidden_state_loss"]


def hidden_state_loss(hidden_s: Tensor, hidden_t: Tensor) -> Tensor:
    """``sum_i mean((H_i^t - H_i^s)^2)`` over the layers ``i`` of batch-first stacks ``(B, N, L, D)``; the mean runs
    over batch, tokens and channels of one layer. The teacher's states are detached."""
    if hidden_s.dim() != 4 or hidden_s.shape != hidden_t.shape:
        raise ValueError(
            "raykd/methods/vimd.py: hidden states must both be batch-first (B, layers, tokens, dim) of one shape; "
            f"got student {tuple(hidden_s.shape)} and teacher {tuple(hidden_t.shape)}"
        )
    per_layer = (hidden_s - hidden_t.detach()).square().mean(dim=(0, 2, 3))
    return per_layer.sum()


@register_method
class ViMD(Method):
    """``CE + alpha * (KL_T + beta * sum_i ||H_i^t - H_i^s||^2)`` (see the module docstring for the exact terms).

    Returns the terms already weighted: ``ce``, ``kd`` = ``alpha * KL_T`` and ``hidden`` = ``alpha * beta * sum``.
    The student sees the LR image (SRVM-Net), the teacher the HR one (HRVM-Net). Both sides must expose
    ``"hidden"`` with the same number of layers and the same per-layer shape, which holds when they share one
    Vim configuration, as in the paper (:meth:`bind` checks it).
    """

    name = "vimd"
    student_input = "lr"
    defaults: ClassVar[dict[str, Any]] = {"alpha": 1.0, "beta": 20.0, "T": 4.0}

    def teacher_outputs(self) -> tuple[str, ...]:
        return ("logits", "hidden")

    def student_outputs(self) -> tuple[str, ...]:
        return ("logits", "hidden")

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        for key in ("logits", "hidden"):
            for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
                if key not in shapes:
                    raise ValueError(f"method 'vimd': the {side} provided no {key!r} output (got {sorted(shapes)}); "
                                     "use Vim-based models (vim_*, srvm_*) on both sides")
        s, t = tuple(student_shapes["hidden"]), tuple(teacher_shapes["hidden"])
        if s != t:
            raise ValueError(
                f"method 'vimd': student hidden states {s} and teacher hidden states {t} differ; per sample they are "
                "(layers, tokens, dim), so both need the same depth and embed_dim and the student's super-resolved "
                "image must have the teacher's HR size (LR size x SR scale = image_size)"
            )
        if tuple(student_shapes["logits"]) != tuple(teacher_shapes["logits"]):
            raise ValueError(f"method 'vimd': student and teacher 'logits' shapes must match, got "
                             f"{tuple(student_shapes['logits'])} and {tuple(teacher_shapes['logits'])}")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        return {
            "ce": F.cross_entropy(student["logits"], target),
            "kd": p["alpha"] * kd_loss(student["logits"], teacher["logits"], p["T"]),
            "hidden": p["alpha"] * p["beta"] * hidden_state_loss(student["hidden"], teacher["hidden"]),
        }
