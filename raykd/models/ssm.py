"""The Mamba mixer (Gu & Dao 2023) and the pre-norm block that wraps it in Vision Mamba and DVMSR.

The mixer calls the ops of :mod:`raykd.models.ops` (selective scan, causal conv1d), which pick the fused CUDA
kernels or PyTorch per call. :class:`MambaBlock` is the one residual block both Vim (RMSNorm, bidirectional
mixer) and DVMSR (LayerNorm, unidirectional mixer, no residual in the authors' release) are built from.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor

from raykd.models.ops import Backend, causal_conv1d, selective_scan

__all__ = ["Mamba", "MambaBlock"]

Norm = Literal["layer", "rms"]
_NORMS = ("layer", "rms")


def _init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    """Mamba's step-size initialisation (Sec. 3.6 / reference code): weights uniform in +-dt_rank^-0.5 and the
    bias the inverse softplus of a log-uniform draw from [dt_min, dt_max], so softplus(bias) starts there."""
    bound = dt_rank**-0.5
    with torch.no_grad():
        dt_proj.weight.uniform_(-bound, bound)
        dt = torch.exp(torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


class Mamba(nn.Module):
    """The Mamba mixer (Gu & Dao 2023, Fig. 3): in-projection to ``x`` and gate ``z``, depthwise causal conv +
    SiLU, input-dependent ``delta, B, C`` (Alg. 2), selective scan, ``* silu(z)``, out-projection.

    ``bidirectional=True`` is Vision Mamba's "v2" layer (Zhu et al. 2024, Alg. 1): in/out projections are
    shared, and a second conv / x_proj / dt_proj / A / D (``*_b``) scans the flipped sequence; the backward
    output is flipped back and the two directions are averaged before ``out_proj`` (Vim's ``if_devide_out``).
    Parameter names are those of ``mamba_ssm`` / Vim, so their state dicts load. Input and output ``(B, L, C)``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        bidirectional: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        suffixes = ("", "_b") if bidirectional else ("",)
        for s in suffixes:
            # nn.Conv1d only holds the (d_inner, 1, d_conv) weight under mamba_ssm's name; causal_conv1d runs it.
            conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias)
            setattr(self, f"conv1d{s}", conv)
            setattr(self, f"x_proj{s}", nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            _init_dt_proj(dt_proj, self.dt_rank, dt_min, dt_max, dt_init_floor)
            setattr(self, f"dt_proj{s}", dt_proj)
            # S4D-real initialisation A = -(1..n) for every channel, stored as log(-A); D starts at 1.
            a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
            setattr(self, "A_log" if not s else "A_b_log", nn.Parameter(a_log))
            setattr(self, f"D{s}", nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _scan(
        self, x: Tensor, z: Tensor, conv: nn.Conv1d, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: Tensor, D: Tensor
    ) -> Tensor:
        """One direction: ``(b, d_inner, l)`` inputs ``x``, gate ``z`` -> gated scan output ``(b, d_inner, l)``."""
        x = causal_conv1d(x, conv.weight.squeeze(1), conv.bias, "silu", self.backend)
        dt, B, C = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        return selective_scan(
            x, delta, -torch.exp(A_log.float()), B.transpose(1, 2), C.transpose(1, 2), D.float(), z=z,
            delta_bias=dt_proj.bias.float(), delta_softplus=True, backend=self.backend,
        )

    def forward(self, hidden: Tensor) -> Tensor:
        x, z = self.in_proj(hidden).transpose(1, 2).contiguous().chunk(2, dim=1)
        y = self._scan(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        if self.bidirectional:
            y_b = self._scan(
                x.flip(-1), z.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b
            )
            y = (y + y_b.flip(-1)) / 2
        return self.out_proj(y.transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
            f"bidirectional={self.bidirectional}, backend={self.backend!r}"
        )


class MambaBlock(nn.Module):
    """A mixer between a pre-norm and a residual: ``x + drop_path(mixer(norm(x)))`` on ``(B, L, C)`` tokens.

    This is Vim's layer (Zhu et al. 2024, eq. 5 / Alg. 1: RMSNorm, bidirectional mixer) and DVMSR's Vision Mamba
    Module (Lei et al. 2024, Fig. 2: LayerNorm, unidirectional mixer). Submodules are ``norm`` and ``mixer``, the
    names of both official codes, so their checkpoints load.

    ``residual=False`` is the block as DVMSR's released code runs it: its stack calls ``block(x, x_size)``, so the
    image size lands in the ``residual`` argument of mamba_ssm's ``Block.forward(hidden, residual)``, which then
    takes ``residual = drop_path(hidden)`` and returns ``mixer(norm(residual))`` without adding anything. Here
    that is ``mixer(norm(drop_path(x)))``: the same in eval mode and under stochastic depth in training.
    The input is cast to the norm's dtype, so a float32 residual stream (Vim's ``residual_in_fp32``) may feed a
    lower-precision block.
    """

    def __init__(
        self, dim: int, mixer: nn.Module, norm: Norm = "layer", norm_eps: float = 1e-5, drop_path: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"MambaBlock norm={norm!r}; use one of {_NORMS}")
        self.mixer = mixer
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if norm == "layer" else nn.RMSNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            return x + self.drop_path(self.mixer(self.norm(x.to(self.norm.weight.dtype))))
        return self.mixer(self.norm(self.drop_path(x).to(self.norm.weight.dtype)))

    def extra_repr(self) -> str:
        return f"residual={self.residual}"
