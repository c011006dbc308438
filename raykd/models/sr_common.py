"""Pieces shared by raykd's super-resolution families (EDSR, RCAN, SwinIR, DVMSR, MTKD's aggregator, SRResNet).

Every SR model in raykd takes and returns RGB images as float tensors in [0, 1] (N x 3 x H x W in, N x 3 x sH x sW
out; the output is not clamped). Families whose reference code works in [0, 255] (EDSR, RCAN: ``rgb_range=255``)
rescale internally, so their official checkpoints load unchanged and give the official outputs divided by 255.

The checkpoints released with the reference implementations (plain state dicts for EDSR-PyTorch and RCAN,
``{'params': ...}`` / ``{'params_ema': ...}`` for SwinIR/BasicSR/KAIR/DVMSR) load strictly with
:func:`raykd.models.weights.load_weights`, which lists by name every key that would not match; ``load_official``
here is the same function under the name the SR code has always used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from raykd.models.weights import load_weights as load_official

__all__ = [
    "DIV2K_RGB_MEAN", "SUPPORTED_SCALES", "MeanShift", "MeanShiftedSR", "PixelShuffleUpsampler", "ResidualGroupConv",
    "TokenEmbed", "check_scale", "conv3x3", "load_official", "to_image", "to_tokens",
]

SUPPORTED_SCALES = (2, 3, 4)
# Mean RGB of DIV2K's training HR images, as hard-coded by EDSR-PyTorch, RCAN and SwinIR.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def check_scale(scale: int, model: str) -> int:
    """Return ``scale`` if ``model`` is defined for it, else raise a ValueError naming the allowed scales."""
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"{model}: scale={scale!r} is not supported; use one of {SUPPORTED_SCALES}")
    return scale


def conv3x3(in_chs: int, out_chs: int) -> nn.Conv2d:
    """The 3x3 convolution (stride 1, padding 1, with bias) every SR family here is built of."""
    return nn.Conv2d(in_chs, out_chs, 3, padding=1)


class MeanShift(nn.Module):
    """Fixed 1x1 convolution ``y = x / std + sign * rgb_range * mean / std`` (EDSR-PyTorch's ``MeanShift``).

    The reference code stores it as a frozen ``Conv2d``; here ``weight`` and ``bias`` are buffers so they are
    never trained or counted as parameters, yet keep the official state-dict keys (``sub_mean.weight``, ...).
    """

    def __init__(
        self,
        rgb_range: float,
        sign: int,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        rgb_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        std = torch.tensor(rgb_std)
        self.register_buffer("weight", torch.eye(3).div(std.view(3, 1)).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(rgb_mean) / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel convolution upsampler (Shi et al. 2016; EDSR Sec. 3, Fig. 3): ``log2(scale)`` stages of
    conv3x3 to 4C channels + PixelShuffle(2), or one conv3x3 to 9C + PixelShuffle(3) for scale 3.

    Without ``act`` the module indices match EDSR's/RCAN's ``Upsampler`` and SwinIR's ``Upsample``
    (convolutions at 0, 2, ...). ``act`` builds an activation appended after every shuffle (SRResNet's PReLU).
    """

    def __init__(self, scale: int, channels: int, act: Callable[[], nn.Module] | None = None) -> None:
        if scale >= 2 and scale & (scale - 1) == 0:
            stages = [2] * int(math.log2(scale))
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"PixelShuffleUpsampler: scale={scale} is not supported; use a power of two or 3")
        layers: list[nn.Module] = []
        for factor in stages:
            layers += [conv3x3(channels, factor * factor * channels), nn.PixelShuffle(factor)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)


def to_tokens(image: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``, scanning rows top to bottom, each left to right."""
    return image.flatten(2).transpose(1, 2)


def to_image(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_tokens`: ``(B, H*W, C)`` row-major tokens -> ``(B, C, H, W)``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


class TokenEmbed(nn.Module):
    """Every pixel of a feature map becomes a token, layer-normalised: the official ``patch_embed`` of SwinIR and
    DVMSR with patch size 1 (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(to_tokens(image))


class ResidualGroupConv(nn.Module):
    """``residual_group`` on the tokens, a 3x3 conv on the image, plus the input: SwinIR's residual Swin
    Transformer block (RSTB, eq. 4) and DVMSR's residual state space block (RSSB, Fig. 2). Keys follow both
    official codes (``residual_group.*``, ``conv``). ``residual_group`` is called as ``group(tokens, (H, W),
    *extra)`` (MTKD's DCTSwin block passes its shifted-window mask)."""

    def __init__(self, dim: int, residual_group: nn.Module) -> None:
        super().__init__()
        self.residual_group = residual_group
        self.conv = conv3x3(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *extra: torch.Tensor) -> torch.Tensor:
        return to_tokens(self.conv(to_image(self.residual_group(x, size, *extra), size))) + x


class MeanShiftedSR(nn.Module):
    """The network EDSR (Fig. 3) and RCAN (Fig. 2) share, with their official keys: the DIV2K mean removed
    (``sub_mean``), a head conv, ``blocks`` and a conv with a global skip (``body``), a sub-pixel upsampler and an
    output conv (``tail``), the mean added back (``add_mean``). Both work in ``[0, rgb_range]`` internally, so
    their released checkpoints load unchanged; inputs and outputs are in [0, 1]. ``blocks()`` makes the body's
    blocks, after the head conv (the reference codes' order of initialisation)."""

    def __init__(self, scale: int, n_feats: int, rgb_range: float, blocks: Callable[[], list[nn.Module]]) -> None:
        super().__init__()
        self.scale = scale
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(*blocks(), conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(PixelShuffleUpsampler(scale, n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), nominally in [0, 1] (not clamped)."""
        x = self.head(self.sub_mean(x * self.rgb_range))
        x = self.add_mean(self.tail(self.body(x) + x))
        return x / self.rgb_range
