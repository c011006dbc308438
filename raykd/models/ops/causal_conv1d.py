"""Depthwise causal 1-D convolution, the short convolution of the Mamba mixer (Gu & Dao 2023, Fig. 3), with the
arguments of ``causal_conv1d.causal_conv1d_fn``."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from raykd.models.ops.backend import Backend, pick_backend

__all__ = ["causal_conv1d", "causal_conv1d_kernel"]


@functools.cache
def causal_conv1d_kernel() -> Callable | None:
    """``causal_conv1d_fn`` of the optional ``causal-conv1d`` package, or None where it does not import."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError, RuntimeError):
        return None
    return causal_conv1d_fn


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Depthwise causal 1-D convolution ``(b, d, l) -> (b, d, l)`` with ``weight`` of shape ``(d, width)``.

    Output step ``t`` sees inputs ``t - width + 1 .. t`` (zeros before the start), as ``causal_conv1d_fn``.
    ``activation`` is ``None`` or ``"silu"`` (``"swish"`` is accepted as its alias). ``"torch"`` and
    ``"reference"`` are the same left-padded ``F.conv1d``.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d activation={activation!r}; use None or 'silu'")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"causal_conv1d weight has shape {tuple(weight.shape)}; expected ({x.shape[1]}, width) for x of "
            f"shape {tuple(x.shape)}"
        )
    if pick_backend(backend, x, causal_conv1d_kernel, "causal_conv1d", "causal-conv1d") == "cuda":
        # by keyword: since causal-conv1d 1.4 the fourth positional parameter is seq_idx
        return causal_conv1d_kernel()(x, weight, bias, activation=activation)
    y = F.conv1d(F.pad(x, (weight.shape[1] - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(y) if activation is not None else y
