"""MTKD's knowledge aggregator: a DCTSwin network fusing several SR teachers' outputs into one HR image.

Jiang et al., "MTKD: Multi-Teacher Knowledge Distillation for Image Super-Resolution", ECCV 2024, Sec. 3.1
(stage 1). The outputs of the N teachers (ordered by teacher name; the caller fixes the order) are concatenated
on channels, ``3N x sH x sW``, pixel-unshuffled by the scale ``s`` to ``3N s^2 x H x W``, and mapped by a 3x3 conv
to C channels. B DCTSwin blocks follow, each L DCTSwin layers and a 3x3 conv with a residual; then a LayerNorm, a
3x3 conv with a residual to the shallow features, and a pixel-shuffle upsampler back to ``3 x sH x sW``.

A DCTSwin layer is a Swin layer whose window attention runs on the window's 2-D DCT coefficients:
``x + iDCT(W-MSA(DCT(LN(x))))`` per ``Ws x Ws`` window, then ``x + MLP(LN(x))``. The DCT is the orthonormal
DCT-II, applied to a raster-flattened window as one ``Ws^2 x Ws^2`` matrix ``kron(D, D)``, so the inverse is its
transpose. Odd layers shift the windows by ``Ws / 2`` with the usual cyclic roll; the relative position bias is
indexed by the coefficients' (frequency) positions inside the window.

Choices where the paper and the official code (YuxuanJJ/MTKD, ``basicsr/archs/DCTSwin_arch.py``) differ or are
silent, all deliberate:

* Transform: the official code uses ``torch_dct.dct_2d`` without normalisation (an unscaled DCT-II); here it
  is orthonormal, so coefficients keep the feature's scale and the inverse is exact by transposition.
* Shifted-window mask: the official code builds its mask from the DCT of the region-label map (a side effect of
  doing the DCT inside ``window_partition``), which is not a region mask. Here the standard Swin mask
  (:func:`raykd.models.swinir.shifted_window_mask`) is applied to the coefficient tokens: token ``i`` of a
  window may attend to token ``j`` only if the pixels at those window positions came from the same region.
* Like the official network (SwinIR-derived) the shallow features are layer-normalised before the blocks
  (``patch_embed.norm``) and the deep features after them (``norm``); no input mean is subtracted (the
  official model does so only for 3-channel inputs).
* Global residual: the official forward adds none, and neither does this one by default. ``mean_residual=True``
  adds the mean of the teacher outputs to the network's output, so the network learns a correction to the
  plain ensemble (an option of raykd, not of the paper).
* Sizes: inputs are mirror-padded at the bottom/right to a multiple of ``Ws * s`` (the official code pads to the
  same multiple, with reflection) and the output is cropped back, so any HR size works.

State-dict keys follow the official code: ``conv_first``, ``patch_embed.norm``,
``layers.i.residual_group.blocks.j.{norm1, attn.*, norm2, mlp.fc1, mlp.fc2}``, ``layers.i.conv``, ``norm``,
``conv_after_body``, ``upsample.*`` (``conv_before_upsample``/``conv_last`` for ``upsampler="pixelshuffle"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from raykd.models.registry import create_model, register_model
from raykd.models.sr_common import ResidualGroupConv, check_scale, to_image
from raykd.models.swinir import (ShiftedWindowLayer, SwinReconstruction, WindowStage, pad_to_multiple,
                                 shifted_window_mask, stage_drop_paths)

__all__ = ["KnowledgeAggregator", "DCTSwinLayer", "MTKDTeacher", "dct_matrix", "mtkd_aggregator", "mtkd_teacher"]

def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """Orthonormal DCT-II matrix ``D`` (n x n): ``D[k, i] = c_k sqrt(2/n) cos(pi (2i + 1) k / (2n))`` with
    ``c_0 = 1/sqrt(2)``, ``c_k = 1`` otherwise (``scipy.fft.dct(norm="ortho")``); ``D @ D.T = I``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


class DCTSwinLayer(ShiftedWindowLayer):
    """One DCTSwin layer (MTKD Sec. 3.1): ``x + iDCT((S)W-MSA(DCT(LN(x))))``, then ``x + MLP(LN(x))``.

    Tokens are ``(B, H*W, C)`` with ``H`` and ``W`` multiples of ``window_size``; ``mask`` is the shifted-window
    mask for that size, used only when ``shift_size > 0``.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float, qkv_bias: bool,
        drop: float, attn_drop: float, drop_path: float,
    ) -> None:
        if dim % num_heads:
            raise ValueError(f"DCTSwinLayer: dim={dim} is not divisible by num_heads={num_heads}")
        super().__init__(dim, num_heads, window_size, shift_size, mlp_ratio, qkv_bias, drop, attn_drop, drop_path)
        d = dct_matrix(window_size)
        # Separable 2-D DCT of a raster-flattened window: vec(D X D^T) = kron(D, D) vec(X).
        self.register_buffer("dct_basis", torch.kron(d, d), persistent=False)

    def dct2(self, windows: Tensor) -> Tensor:
        """2-D orthonormal DCT-II of each window: ``(..., Ws*Ws, C)`` raster-ordered pixels -> coefficients."""
        return self.dct_basis.to(windows.dtype) @ windows

    def idct2(self, coeffs: Tensor) -> Tensor:
        """Inverse of :meth:`dct2` (the basis is orthogonal, so its transpose)."""
        return self.dct_basis.to(coeffs.dtype).mT @ coeffs

    def mix_windows(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """Self-attention on each window's DCT coefficients, back to pixels."""
        return self.idct2(self.attn(self.dct2(windows), mask))

    def forward(self, x: Tensor, x_size: tuple[int, int], mask: Tensor | None) -> Tensor:
        return self.layer(x, x_size, mask)


def dct_swin_block(dim: int, depth: int, num_heads: int, window_size: int, drop_path: Sequence[float],
                   **layer_kwargs) -> ResidualGroupConv:
    """DCTSwin block (MTKD Fig. 2): a stage of L DCTSwin layers alternating regular and shifted windows (official
    ``BasicLayer``, ``residual_group``), a 3x3 conv (``conv``), and a residual connection."""
    return ResidualGroupConv(dim, WindowStage(depth, window_size, drop_path, lambda shift, rate: DCTSwinLayer(
        dim, num_heads, window_size, shift, drop_path=rate, **layer_kwargs)))


class KnowledgeAggregator(SwinReconstruction):
    """MTKD stage-1 knowledge aggregation network (module docstring for the architecture and choices).

    ``forward`` takes the N teacher outputs, either as a list of ``(B, 3, sH, sW)`` tensors in teacher-name
    order or already concatenated to ``(B, 3N, sH, sW)``, and returns the aggregated ``(B, 3, sH, sW)`` image
    (RGB in [0, 1] when the teachers' are; not clamped).
    """

    def __init__(
        self,
        num_teachers: int = 3,
        scale: int = 4,
        embed_dim: int = 24,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        upsampler: str = "pixelshuffledirect",
        mean_residual: bool = False,
    ) -> None:
        super().__init__()
        if num_teachers < 1:
            raise ValueError(f"KnowledgeAggregator: num_teachers={num_teachers} must be >= 1")
        if len(depths) != len(num_heads):
            raise ValueError(f"KnowledgeAggregator: depths={tuple(depths)} and num_heads={tuple(num_heads)} differ "
                             "in length (one entry per DCTSwin block)")
        if window_size < 2:
            raise ValueError(f"KnowledgeAggregator: window_size={window_size} must be >= 2")
        self.num_teachers = num_teachers
        self.scale = scale
        self.window_size = window_size
        self.mean_residual = mean_residual

        self.unshuffle = nn.PixelUnshuffle(scale)
        self._build_shallow(3 * num_teachers * scale * scale, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList(
            dct_swin_block(
                embed_dim, depth=depth, num_heads=heads, window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=rates,
            )
            for depth, heads, rates in zip(depths, num_heads, stage_drop_paths(depths, drop_path_rate))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._build_reconstruction(embed_dim, scale, upsampler)
        self.apply(self._init_weights)

    def _concat(self, outputs: Tensor | Sequence[Tensor]) -> Tensor:
        if not isinstance(outputs, Tensor):
            outputs = list(outputs)
            if len(outputs) != self.num_teachers:
                raise ValueError(f"KnowledgeAggregator: got {len(outputs)} teacher outputs, built for "
                                 f"num_teachers={self.num_teachers}")
            shapes = {tuple(t.shape) for t in outputs}
            if len(shapes) != 1:
                raise ValueError(f"KnowledgeAggregator: teacher outputs differ in shape: {sorted(shapes)}; every "
                                 "teacher must return the same (B, 3, sH, sW) image")
            outputs = torch.cat(outputs, dim=1)
        if outputs.dim() != 4 or outputs.shape[1] != 3 * self.num_teachers:
            raise ValueError(f"KnowledgeAggregator: expected (B, {3 * self.num_teachers}, sH, sW) "
                             f"(3 channels x {self.num_teachers} teachers), got {tuple(outputs.shape)}")
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        """The DCTSwin blocks on a (B, C, H, W) map whose sides are window multiples."""
        x_size = (x.shape[2], x.shape[3])
        mask = shifted_window_mask(*x_size, self.window_size, self.window_size // 2, device=x.device)
        t = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            t = layer(t, x_size, mask)
        return to_image(self.norm(t), x_size)

    def forward(self, outputs: Tensor | Sequence[Tensor]) -> Tensor:
        """N teacher outputs (list, or concatenated on channels) -> the aggregated image, same HR size."""
        x = self._concat(outputs)
        h, w = x.shape[-2:]
        feat = self.conv_first(self.unshuffle(pad_to_multiple(x, self.window_size * self.scale)))
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        out = self._reconstruct(feat)[..., :h, :w]
        if self.mean_residual:
            out = out + x.unflatten(1, (self.num_teachers, 3)).mean(dim=1)
        return out


@register_model
def mtkd_aggregator(num_teachers: int = 3, scale: int = 4, **kwargs) -> KnowledgeAggregator:
    """MTKD knowledge aggregator, paper configuration: C = 24 channels, B = 4 DCTSwin blocks of L = 2 layers,
    6 heads, window Ws = 8, MLP ratio 2, one-step pixel-shuffle reconstruction (about 0.12M parameters for 3
    teachers at x4). The official code's released x4 config is
    ``embed_dim=96, depths=(4, 4), num_heads=(6, 6), upsampler="pixelshuffle"``."""
    config = dict(embed_dim=24, depths=(2,) * 4, num_heads=(6,) * 4, window_size=8, mlp_ratio=2.0,
                  upsampler="pixelshuffledirect")
    return KnowledgeAggregator(num_teachers, check_scale(scale, "mtkd_aggregator"), **{**config, **kwargs})


class MTKDTeacher(nn.Module):
    """The aggregated MTKD teacher as one SR model: ``I_MT = agg(T_1(lr), ..., T_N(lr))`` (MTKD Sec. 3.1).

    ``teachers`` are the N SR networks in teacher-name order (the aggregator's channel order); ``forward`` takes an
    LR batch ``(B, 3, h, w)`` in [0, 1] and returns the aggregated ``(B, 3, s*h, s*w)`` image. Its weights are one
    state dict (``teachers.<i>.*``, ``aggregator.*``), so the teacher service stores and serves it like any teacher.
    """

    def __init__(self, teachers: Sequence[nn.Module], aggregator: KnowledgeAggregator) -> None:
        super().__init__()
        if len(teachers) != aggregator.num_teachers:
            raise ValueError(f"MTKDTeacher: {len(teachers)} teachers but the aggregator was built for "
                             f"num_teachers={aggregator.num_teachers}")
        self.teachers = nn.ModuleList(teachers)
        self.aggregator = aggregator
        self.scale = aggregator.scale

    def forward(self, x: Tensor) -> Tensor:
        return self.aggregator([teacher(x) for teacher in self.teachers])


_TEACHER_KEYS = frozenset({"name", "model", "model_kwargs"})


@register_model
def mtkd_teacher(teachers: Sequence[Mapping[str, Any]], aggregator_kwargs: Mapping[str, Any] | None = None,
                 scale: int = 4) -> MTKDTeacher:
    """The aggregated MTKD teacher (:class:`MTKDTeacher`): ``teachers`` lists the N SR networks in name order as
    ``{"model": registry name, "model_kwargs": {...}, "name": teacher name (informative)}``; the aggregator is
    ``mtkd_aggregator(num_teachers=N, scale=scale, **aggregator_kwargs)``."""
    if not teachers:
        raise ValueError("mtkd_teacher: teachers is empty; give one {'model': ..., 'model_kwargs': ...} per teacher")
    nets = []
    for i, entry in enumerate(teachers):
        unknown = sorted(set(entry) - _TEACHER_KEYS)
        if unknown or "model" not in entry:
            raise ValueError(f"mtkd_teacher: teachers[{i}] = {dict(entry)} must have 'model' and may have "
                             f"{sorted(_TEACHER_KEYS - {'model'})}; unknown keys: {unknown}")
        kwargs = dict(entry.get("model_kwargs") or {})
        if kwargs.setdefault("scale", scale) != scale:
            raise ValueError(f"mtkd_teacher: teachers[{i}] ({entry['model']}) has scale={kwargs['scale']} but the "
                             f"aggregated teacher is x{scale}")
        nets.append(create_model(entry["model"], **kwargs))
    return MTKDTeacher(nets, mtkd_aggregator(len(nets), scale, **dict(aggregator_kwargs or {})))
