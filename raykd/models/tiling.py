"""Whole-image super-resolution, in one piece or in tiles.

SR networks are evaluated, and SR teachers' outputs stored, on whole images. :func:`super_resolve` runs the
network on the whole LR image by default; with ``tile`` > 0 it runs LR tiles of that side, ``overlap`` pixels
apart, and stitches the outputs, which bounds memory on 2K images. Tiling is exact only for networks whose
receptive field is within ``overlap // 2``; networks that see the whole image (DVMSR's Mamba scan, RCAN's channel
attention, a Swin's shifted windows at the border) give slightly different outputs tiled (barbara x4 with the
released DVMSR: 26.02 dB untiled, 26.08 dB with 128-pixel tiles), which is why it is not the default.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from raykd.models.features import unwrap_model

__all__ = ["tile_spans", "super_resolve"]


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: ``(start, end, own_start, own_end)`` in input pixels.

    Tiles of ``tile`` pixels step by ``tile - overlap`` (the last one is moved back to end at ``length``); each
    output pixel is taken from exactly one tile, the one in whose share it lies, split at the middle of every
    overlap. ``tile <= 0`` or a short axis: one tile.
    """
    if tile > 0 and not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap={overlap} must be >= 0 and smaller than tile={tile}")
    if tile <= 0 or length <= tile:
        return [(0, length, 0, length)]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


@torch.no_grad()
def super_resolve(model: nn.Module, x: Tensor, scale: int, tile: int = 0, overlap: int = 16,
                  amp: bool = False) -> Tensor:
    """Super-resolve ``x`` (B, C, h, w) with ``model``: whole, or tile by tile (:func:`tile_spans`).

    Returns (B, C_out, h*scale, w*scale) float32 on the CPU, so only one tile's activations are ever on the
    device. ``amp`` runs under autocast (half precision on CUDA).
    """
    b, _, h, w = x.shape
    out: Tensor | None = None
    for ys, ye, yo0, yo1 in tile_spans(h, tile, overlap):
        for xs, xe, xo0, xo1 in tile_spans(w, tile, overlap):
            with torch.autocast(x.device.type, enabled=amp):
                y = model(x[..., ys:ye, xs:xe])
            expected = ((ye - ys) * scale, (xe - xs) * scale)
            if tuple(y.shape[-2:]) != expected:
                raise ValueError(f"{type(unwrap_model(model)).__name__} turned a {ye - ys}x{xe - xs} input into "
                                 f"{tuple(y.shape[-2:])}, not x{scale} {expected}: build it with scale={scale}")
            if out is None:
                out = torch.empty((b, y.shape[1], h * scale, w * scale), dtype=torch.float32)
            out[..., yo0 * scale:yo1 * scale, xo0 * scale:xo1 * scale] = \
                y[..., (yo0 - ys) * scale:(yo1 - ys) * scale, (xo0 - xs) * scale:(xo1 - xs) * scale].float().cpu()
    assert out is not None
    return out
