"""The selective scan, Mamba's S6 layer (Gu & Dao 2023, Sec. 3.2, Alg. 2), with the zero-order-hold
discretisation of ``A`` and the Euler one of ``B`` used by the reference code (eq. 4 with ``B_bar = delta B``):

    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,      y_t = C_t h_t + D u_t,      out_t = y_t * silu(z_t)

with shapes and arguments of ``mamba_ssm``'s ``selective_scan_fn``. Three interchangeable backends compute it:

- ``"cuda"``: the fused kernel of the optional ``mamba-ssm`` package (``pip install raykd[cuda]``), imported
  lazily the first time a CUDA tensor asks for it;
- ``"torch"``: pure PyTorch, any device. The sequence is processed in chunks: inside a chunk the decays
  ``exp(delta A)``, the inputs ``delta B u`` and the outputs ``C h`` are formed for all steps at once, and the
  recurrence itself is one fused multiply-add per step. Only the state at each chunk boundary is kept; the
  backward pass (a custom autograd function) recomputes a chunk from its boundary state and runs the adjoint
  recurrence ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}`` in reverse (first derivatives only). Beyond the
  inputs it holds ``chunk + l / chunk`` states, and every exponent is the ``delta_t A`` of a single step, so
  nothing overflows that the recurrence itself would not. (A closed form per chunk,
  ``h_t = sum_s exp(S_t - S_s) x_s`` over segment sums, does T times the work and a parallel prefix log T
  times; on CPU at Vim-Tiny shapes the closed form measured 9x slower than the per-step update with 4-step
  chunks and worse with longer ones);
- ``"reference"``: the recurrence above written step by step and differentiated by autograd (for tests).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from raykd.models.ops.backend import Backend, pick_backend

__all__ = ["DEFAULT_CHUNK_SIZE", "selective_scan", "selective_scan_kernel"]

# Steps per chunk of the "torch" scan. bench/selective_scan.py measured times within 25% of each other from 16
# to 128 steps at Vim-Tiny shapes (16 the fastest) and within 10% from 16 to 64 at length 4096, while the four
# chunk-sized buffers of the backward pass grow with it (12.6 MB for a Vim-Tiny direction at batch 8).
DEFAULT_CHUNK_SIZE = 16


@functools.cache
def selective_scan_kernel() -> Callable | None:
    """``selective_scan_fn`` of the optional ``mamba-ssm`` package, or None where it does not import (it loads
    its compiled extension at import, which fails without CUDA with ImportError or OSError)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError, RuntimeError):
        return None
    return selective_scan_fn


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Selective scan (Mamba Alg. 2) with ``mamba_ssm.selective_scan_fn``'s semantics; returns ``(b, d, l)``.

    Args:
        u, delta: ``(b, d, l)`` input and step size (before ``delta_bias`` / softplus).
        A: ``(d, n)`` real state matrix (diagonal per channel; Mamba passes ``-exp(A_log)``).
        B, C: ``(b, n, l)``, or ``(b, g, n, l)`` where group ``k`` serves channels ``k*d/g .. (k+1)*d/g - 1``.
        D: optional ``(d,)`` skip, adding ``D * u``.
        z: optional ``(b, d, l)`` gate: the output is multiplied by ``silu(z)``.
        delta_bias: optional ``(d,)`` added to ``delta``; then ``softplus`` if ``delta_softplus``.
        backend: see the module docstring. ``chunk_size`` only affects the ``"torch"`` backend.

    The scan runs in float32 (float64 for float64 ``u``) and the result has ``u``'s dtype, as in mamba_ssm.
    """
    which = pick_backend(backend, u, selective_scan_kernel, "selective_scan", "mamba-ssm")
    if which == "cuda":
        return selective_scan_kernel()(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus
        )
    B, C = _check_scan_shapes(u, delta, A, B, C, D, z, delta_bias)
    if chunk_size < 1:
        raise ValueError(f"selective_scan chunk_size={chunk_size}; must be >= 1")
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u32, delta = u.to(dtype), delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta = F.softplus(delta)
    A, B, C = A.to(dtype), B.to(dtype), C.to(dtype)
    if which == "torch":
        y = _ChunkedScan.apply(u32, delta, A, B, C, chunk_size)
    else:
        y = _scan_reference(u32, delta, A, B, C)
    if D is not None:
        y = y + u32 * D.to(dtype).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(u.dtype)


def _check_scan_shapes(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Validate shapes for the PyTorch backends and return ``B, C`` as ``(b, g, n, l)``."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan u must be (b, d, l), got {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta has shape {tuple(delta.shape)}; expected {tuple(u.shape)}")
    if A.is_complex() or A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be a real ({d}, n) tensor, got {A.dtype} {tuple(A.shape)}")
    n = A.shape[1]
    grouped = []
    for name, m in (("B", B), ("C", C)):
        m = m.unsqueeze(1) if m.dim() == 3 else m
        if m.dim() != 4 or m.shape[0] != b or m.shape[2] != n or m.shape[3] != l or d % m.shape[1]:
            raise ValueError(
                f"{name} has shape {tuple(m.shape)}; expected ({b}, {n}, {l}) or "
                f"({b}, g, {n}, {l}) with g dividing d={d} (input-dependent {name}, as Mamba uses)"
            )
        grouped.append(m)
    if grouped[0].shape[1] != grouped[1].shape[1]:
        raise ValueError(f"B and C have {grouped[0].shape[1]} and {grouped[1].shape[1]} groups")
    for name, v, shape in (("D", D, (d,)), ("delta_bias", delta_bias, (d,)), ("z", z, tuple(u.shape))):
        if v is not None and tuple(v.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(v.shape)}; expected {shape}")
    return grouped[0], grouped[1]


def _scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """``y_t = C_t h_t`` with ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, one step at a time."""
    b, d, l = u.shape
    B = B.repeat_interleave(d // B.shape[1], dim=1)
    C = C.repeat_interleave(d // C.shape[1], dim=1)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t]).unsqueeze(-1) * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    return torch.stack(ys, dim=-1)


def _by_step(v: Tensor, groups: int) -> Tensor:
    """``(b, d, T)`` -> ``(T, b, g, d/g)``: time leading, so each step's slice is contiguous."""
    b, d, t = v.shape
    return v.reshape(b, groups, d // groups, t).permute(3, 0, 1, 2)


def _from_step(v: Tensor) -> Tensor:
    """Inverse of :func:`_by_step`: ``(T, b, g, d/g)`` -> ``(b, d, T)``."""
    t, b, g, h = v.shape
    return v.permute(1, 2, 3, 0).reshape(b, g * h, t)


def _chunk_terms(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, s0: int, s1: int, decay: Tensor, inputs: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fill ``decay = exp(delta_t A)`` and ``inputs = delta_t B_t u_t`` of steps ``s0 .. s1-1``, laid out
    ``(T, b, g, d/g, n)``; return ``delta``, ``u`` as ``(T, b, g, d/g)`` and ``B`` as ``(T, b, g, n, 1)``.

    The chunk-sized tensors are written into caller-owned buffers: allocating them afresh for every chunk
    costs more in page faults than the arithmetic (measured 4x on the per-step update).
    """
    g = B.shape[1]
    dl, uu = _by_step(delta[:, :, s0:s1], g), _by_step(u[:, :, s0:s1], g)
    Bt = B[..., s0:s1].permute(3, 0, 1, 2).unsqueeze(-1)
    torch.mul(dl.unsqueeze(-1), A.view(g, -1, A.shape[1]), out=decay).exp_()
    torch.mul((dl * uu).unsqueeze(-1), Bt.transpose(-1, -2), out=inputs)
    return dl, uu, Bt


def _run_forward(decay: Tensor, states: Tensor, h: Tensor) -> None:
    """Turn ``states`` from the inputs into the states ``h_t = decay_t * h_{t-1} + inputs_t`` of a chunk, in
    place, from the state ``h`` before it."""
    for t in range(states.shape[0]):
        h = torch.addcmul(states[t], decay[t], h, out=states[t])


def _run_adjoint(decay: Tensor, grads: Tensor, carry: Tensor) -> None:
    """Turn ``grads`` from the sources ``s_t`` into ``g_t = s_t + decay_{t+1} g_{t+1}`` backwards through a
    chunk, in place; ``carry`` is ``decay g`` of the step after the chunk."""
    grads[-1] += carry
    for t in range(grads.shape[0] - 2, -1, -1):
        torch.addcmul(grads[t], decay[t + 1], grads[t + 1], out=grads[t])


class _ChunkedScan(torch.autograd.Function):
    """``y = C h`` of the selective scan, for ``delta`` already biased and ``B, C`` as ``(b, g, n, l)``."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
        b, d, l = u.shape
        g, n = B.shape[1], B.shape[2]
        chunk = min(chunk, l)
        y = u.new_empty(b, d, l)
        starts = u.new_empty(math.ceil(l / chunk), b, g, d // g, n)
        decay_buf, states_buf = (u.new_empty(chunk, b, g, d // g, n) for _ in range(2))
        h = u.new_zeros(b, g, d // g, n)
        for k, s0 in enumerate(range(0, l, chunk)):
            s1 = min(s0 + chunk, l)
            decay, states = decay_buf[: s1 - s0], states_buf[: s1 - s0]
            starts[k] = h
            _chunk_terms(u, delta, A, B, s0, s1, decay, states)
            _run_forward(decay, states, starts[k])
            Ct = C[..., s0:s1].permute(3, 0, 1, 2).unsqueeze(-1)
            y[:, :, s0:s1] = _from_step(torch.matmul(states, Ct).squeeze(-1))
            h = states[-1]
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.chunk = chunk
        return y

    @staticmethod
    @once_differentiable  # the in-place chunk buffers cannot be differentiated again
    def backward(ctx, dy: Tensor):
        u, delta, A, B, C, starts = ctx.saved_tensors
        chunk = ctx.chunk
        b, d, l = u.shape
        g, n = B.shape[1], B.shape[2]
        A3 = A.view(g, d // g, n)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A3)
        carry = torch.zeros_like(starts[0])
        decay_buf, states_buf, grads_buf, tmp_buf = (u.new_empty(chunk, b, g, d // g, n) for _ in range(4))
        for k in range(len(starts) - 1, -1, -1):
            s0, s1 = k * chunk, min((k + 1) * chunk, l)
            decay, states, grads, tmp = (buf[: s1 - s0] for buf in (decay_buf, states_buf, grads_buf, tmp_buf))
            dl, uu, Bt = _chunk_terms(u, delta, A, B, s0, s1, decay, states)
            _run_forward(decay, states, starts[k])
            dyt = _by_step(dy[:, :, s0:s1], g)
            Ct = C[..., s0:s1].permute(3, 0, 1, 2).unsqueeze(-2)
            torch.mul(dyt.unsqueeze(-1), Ct, out=grads)
            _run_adjoint(decay, grads, carry)  # grads[t] = dL/dh_t
            carry = decay[0] * grads[0]
            dC[..., s0:s1] = torch.matmul(states.transpose(-1, -2), dyt.unsqueeze(-1)).squeeze(-1).permute(1, 2, 3, 0)
            dB[..., s0:s1] = (
                torch.matmul(grads.transpose(-1, -2), (dl * uu).unsqueeze(-1)).squeeze(-1).permute(1, 2, 3, 0)
            )
            d_du = torch.matmul(grads, Bt).squeeze(-1)  # dL/d(delta_t u_t)
            # dL/d(delta_t A) = g_t * h_{t-1} * exp(delta_t A), built in the decay buffer.
            dlog = decay.mul_(grads)
            dlog[1:] *= states[:-1]
            dlog[0] *= starts[k]
            ddelta_t = d_du * uu + torch.mul(dlog, A3, out=tmp).sum(-1)
            dA += dlog.mul_(dl.unsqueeze(-1)).sum((0, 1))
            du[:, :, s0:s1] = _from_step(d_du * dl)
            ddelta[:, :, s0:s1] = _from_step(ddelta_t)
        return du, ddelta, dA.view(d, n), dB, dC, None
