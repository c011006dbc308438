"""SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021), classical and lightweight SR.

Module and buffer names follow the official ``network_swinir.py`` (``conv_first``, ``patch_embed.norm``,
``layers.N.residual_group.blocks.M.{norm1, attn.*, norm2, mlp.fc1, mlp.fc2}``, ``layers.N.conv``, ``norm``,
``conv_after_body``, ``conv_before_upsample.0``, ``upsample.*``, ``conv_last``), including the persistent
``relative_position_index`` and shifted-window ``attn_mask`` buffers, so the released
``001_classicalSR_*`` / ``002_lightweightSR_*`` files load strictly with
:func:`raykd.models.weights.load_weights`. The stored masks belong to the training patch size ``img_size``:
64 for the DF2K-trained classical (``s64w8``) and all lightweight models, 48 for the DIV2K-trained classical
ones (``s48w8``). Any input size works; masks for other sizes are computed on the fly.

Input and output are RGB in [0, 1] (the official ``img_range=1``). Inputs whose sides are not a multiple of the
window size are mirror-padded (edge pixel repeated, as the flip-and-concatenate padding of the official
``main_test_swinir.py``) and the output is cropped back to ``scale`` times the input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_

from raykd.models.registry import register_model
from raykd.models.sr_common import (
    DIV2K_RGB_MEAN, PixelShuffleUpsampler, ResidualGroupConv, TokenEmbed, check_scale, conv3x3, to_image,
)

_UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
_MASKED = -100.0  # additive score of a masked pair in the official code (not -inf, so outputs match it exactly)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window_size**2, C), windows in raster order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window_size * window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, window_size**2, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) index into the ((2M-1)^2, heads) bias table for every token pair of an M x M window (Swin eq. 4)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # offsets shifted to [0, 2M-2]
    return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(
    h: int, w: int, window_size: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """(num_windows, N, N) additive mask for shifted-window attention on an H x W map (Swin Sec. 3.2).

    After the cyclic shift, windows on the bottom/right border hold pixels from up to three regions that were
    not adjacent in the image; pairs from different regions get -100 so they do not attend to each other.
    """

    def bands(n: int) -> torch.Tensor:
        label = torch.zeros(n, dtype=torch.long, device=device)
        label[n - window_size : n - shift] = 1
        label[n - shift :] = 2
        return label

    region = (bands(h)[:, None] * 3 + bands(w)[None, :]).view(1, h, w, 1)
    windows = window_partition(region, window_size).squeeze(-1)
    differ = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, _MASKED)


def _mirror_index(n: int, total: int, device: torch.device) -> torch.Tensor:
    # Indices 0..n-1, n-1..0, 0..n-1, ...: symmetric padding that also works when the pad exceeds the side.
    i = torch.arange(total, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror-pad the bottom and right of (N, C, H, W) ``x`` so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    x = x.index_select(-2, _mirror_index(h, h + pad_h, x.device))
    return x.index_select(-1, _mirror_index(w, w + pad_w, x.device))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside M x M windows with a learned relative position bias (Swin eq. 4):
    ``softmax(Q K^T / sqrt(d) + B + mask) V``, computed with ``F.scaled_dot_product_attention``."""

    def __init__(
        self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B * num_windows, N, C); ``mask``: (num_windows, N, N) additive, or None."""
        b_, n, c = x.shape
        q, k, v = self.qkv(x).view(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1).unsqueeze(0)  # 1, heads, N, N
        if mask is not None:
            # Windows of one image are consecutive in the batch: folding (window, head) into the head axis
            # lets one (windows * heads) bias broadcast over images instead of being copied per image.
            groups = mask.shape[0] * self.num_heads
            bias = (bias + mask.unsqueeze(1)).reshape(1, groups, n, n)
            q, k, v = (t.reshape(b_ // mask.shape[0], groups, n, -1) for t in (q, k, v))
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(x.reshape(b_, self.num_heads, n, -1).transpose(1, 2).reshape(b_, n, c)))


class ShiftedWindowLayer(nn.Module):
    """The Swin layer (Liu et al., ICCV 2021, eq. 3; SwinIR eq. 5-6) SwinIR and MTKD's DCTSwin share:
    ``x + mix((S)W(LN(x)))`` then ``x + MLP(LN(x))``, the windows cyclically shifted by ``shift_size`` (every other
    layer of a stage). ``mix`` is the windows' multi-head self-attention; a subclass may wrap it
    (:meth:`mix_windows`). Official keys: ``norm1``, ``attn.*``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float, qkv_bias: bool,
        drop: float, attn_drop: float, drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def mix_windows(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(B * windows, Ws * Ws, C)`` -> the same shape: (shifted-)window self-attention."""
        return self.attn(windows, mask)

    def layer(self, x: torch.Tensor, x_size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """The layer on tokens ``(B, H*W, C)`` of an ``x_size`` map; ``mask`` (shifted windows only) for that size."""
        h, w = x_size
        b, length, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.mix_windows(window_partition(y, self.window_size), mask if self.shift_size > 0 else None)
        y = window_reverse(windows, self.window_size, h, w)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, length, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinTransformerBlock(ShiftedWindowLayer):
    """SwinIR's Swin layer: ``attn_mask`` is stored for ``input_resolution`` (the training patch, as the official
    code keeps it) and recomputed for any other input size."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int,
                 shift_size: int, **layer_kwargs) -> None:
        super().__init__(dim, num_heads, window_size, shift_size, **layer_kwargs)
        self.input_resolution = input_resolution
        mask = shifted_window_mask(*input_resolution, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        mask = self.attn_mask
        if self.shift_size > 0 and x_size != self.input_resolution:
            mask = shifted_window_mask(*x_size, self.window_size, self.shift_size, device=x.device)
        return self.layer(x, x_size, mask)


class WindowStage(nn.Module):
    """A stack of ``depth`` Swin layers alternating regular and shifted (by half a window) windows (official
    ``BasicLayer``); ``layer(shift_size, drop_path)`` makes one. Called as ``stage(tokens, x_size, *extra)``, every
    layer getting the same arguments."""

    def __init__(self, depth: int, window_size: int, drop_path: Sequence[float],
                 layer: Callable[[int, float], nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(layer(0 if i % 2 == 0 else window_size // 2, drop_path[i]) for i in range(depth))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], *extra: Any) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, x_size, *extra)
        return x


def stage_drop_paths(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Stochastic depth (Huang et al., 2016) as Swin schedules it: rates rising linearly from 0 to ``rate`` over
    all layers, split by stage."""
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()
    return [rates[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


class SwinReconstruction(nn.Module):
    """The shallow head and reconstruction tail SwinIR-style networks share (and their official key names), plus
    their timm-style weight init. Tail: ``conv_after_body`` (the deep features' last conv, before the long skip),
    then ``"pixelshuffle"`` = conv + LeakyReLU to 64 channels, pixel-shuffle steps, output conv, or
    ``"pixelshuffledirect"`` = one conv to ``3 * scale^2`` channels and a single pixel shuffle."""

    def _build_shallow(self, in_chs: int, embed_dim: int) -> None:
        """Shallow feature extraction (SwinIR eq. 1): ``conv_first``, then every pixel a token (``patch_embed``)."""
        self.conv_first = conv3x3(in_chs, embed_dim)
        self.patch_embed = TokenEmbed(embed_dim)

    def _build_reconstruction(self, embed_dim: int, scale: int, upsampler: str) -> None:
        if upsampler not in _UPSAMPLERS:
            raise ValueError(f"{type(self).__name__}: upsampler={upsampler!r} is not one of {_UPSAMPLERS}")
        self.conv_after_body = conv3x3(embed_dim, embed_dim)
        self.upsampler = upsampler
        if upsampler == "pixelshuffle":
            num_feat = 64
            self.conv_before_upsample = nn.Sequential(conv3x3(embed_dim, num_feat), nn.LeakyReLU(inplace=True))
            self.upsample = PixelShuffleUpsampler(scale, num_feat)
            self.conv_last = conv3x3(num_feat, 3)
        else:
            self.upsample = nn.Sequential(conv3x3(embed_dim, 3 * scale * scale), nn.PixelShuffle(scale))

    def _reconstruct(self, feat: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "pixelshuffle":
            return self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        return self.upsample(feat)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SwinIR(SwinReconstruction):
    """Shallow conv, RSTB deep feature extraction with a long skip, and a sub-pixel reconstruction head
    (SwinIR Sec. 3.1, eqs. 1-3). ``upsampler`` is ``"pixelshuffle"`` (classical SR: conv + LeakyReLU to 64
    channels, PixelShuffleUpsampler, conv) or ``"pixelshuffledirect"`` (lightweight SR: one conv to
    3 * scale**2 channels and a single PixelShuffle)."""

    def __init__(
        self,
        scale: int = 4,
        img_size: int | tuple[int, int] = 64,
        window_size: int = 8,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        upsampler: str = "pixelshuffle",
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        resolution = to_2tuple(img_size)
        if any(side % window_size or side <= window_size for side in resolution):
            raise ValueError(
                f"SwinIR: img_size={img_size} must be a multiple of window_size={window_size} and larger than it "
                "(the official code changes the window otherwise); use the training patch size, e.g. 48 or 64"
            )
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinIR: depths={tuple(depths)} and num_heads={tuple(num_heads)} differ in length")
        self.scale = scale
        self.window_size = window_size
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self._build_shallow(3, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        layer_kwargs = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate)

        def stage(depth: int, heads: int, drop_path: list[float]) -> WindowStage:
            return WindowStage(depth, window_size, drop_path, lambda shift, rate: SwinTransformerBlock(
                embed_dim, resolution, heads, window_size, shift, drop_path=rate, **layer_kwargs))

        # RSTB (eq. 4): a stage of Swin layers, a 3x3 conv and a skip connection
        self.layers = nn.ModuleList(ResidualGroupConv(embed_dim, stage(depth, heads, rates)) for depth, heads, rates
                                    in zip(depths, num_heads, stage_drop_paths(depths, drop_path_rate)))
        self.norm = nn.LayerNorm(embed_dim)
        self._build_reconstruction(embed_dim, scale, upsampler)
        self.apply(self._init_weights)

    @property
    def stage_names(self) -> tuple[str, str, str]:
        """Three image-shaped ``(B, C, H, W)`` points of the deep features (``stage:0..2``,
        :mod:`raykd.models.features`), at the input's window-padded size: the last conv of the RSTBs ``n // 3``
        and ``2n // 3`` in (``layers.k.conv``) and ``conv_after_body``, before the long skip.

        The thirds follow FAKD's EDSR split (:attr:`raykd.models.edsr.EDSR.stage_names`); FAKD predates SwinIR,
        so these points are ours. An RSTB's output is a token sequence (its conv's output plus the skip, added
        to tokens), so its conv, the nearest module with an image-shaped output, stands for it: the residual
        branch without the skip. A point with no RSTB before it is ``conv_first``.
        """
        stages = len(self.layers)
        first, second = stages // 3, 2 * stages // 3
        return (f"layers.{first - 1}.conv" if first else "conv_first",
                f"layers.{second - 1}.conv" if second else "conv_first", "conv_after_body")

    @staticmethod
    def weight_mismatch_hint(key: str, stored_shape: tuple[int, ...]) -> str:
        """Explain a stored tensor of another shape (used by :func:`raykd.models.weights.load_weights`): the
        shifted-window masks hold one row per window of the training patch, so a mask of another shape means
        the model was built for another ``img_size``, which follows from the shape."""
        if key.endswith("attn_mask") and len(stored_shape) == 3:
            side = math.isqrt(stored_shape[0]) * math.isqrt(stored_shape[1])
            return f" (the checkpoint was trained on {side}x{side} patches: build the model with img_size={side})"
        return ""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep feature extraction H_DF (eq. 2) on a (N, C, H, W) map whose sides are window multiples."""
        x_size = (x.shape[2], x.shape[3])
        t = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            t = layer(t, x_size)
        return to_image(self.norm(t), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), nominally in [0, 1] (not clamped)."""
        h, w = x.shape[-2:]
        x = (pad_to_multiple(x, self.window_size) - self.mean) * self.img_range
        feat = self.conv_first(x)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        out = self._reconstruct(feat) / self.img_range + self.mean
        return out[..., : h * self.scale, : w * self.scale]


@register_model
def swinir(scale: int = 4, **kwargs) -> SwinIR:
    """SwinIR classical SR (Sec. 4.1): 6 RSTBs x 6 Swin layers, 180 channels, 6 heads, window 8, MLP ratio 2,
    pixel-shuffle reconstruction; 11.9M parameters at x4. Pass ``img_size=48`` for the DIV2K-trained files."""
    config = dict(img_size=64, window_size=8, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, mlp_ratio=2.0,
                  upsampler="pixelshuffle")
    return SwinIR(check_scale(scale, "swinir"), **{**config, **kwargs})


@register_model
def swinir_light(scale: int = 4, **kwargs) -> SwinIR:
    """SwinIR lightweight SR (Sec. 4.1): 4 RSTBs x 6 Swin layers, 60 channels, 6 heads, window 8, MLP ratio 2,
    one-step pixel-shuffle reconstruction; 0.93M parameters at x4."""
    config = dict(img_size=64, window_size=8, embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, mlp_ratio=2.0,
                  upsampler="pixelshuffledirect")
    return SwinIR(check_scale(scale, "swinir_light"), **{**config, **kwargs})
