"""Pieces shared by raykd's super-resolution families (EDSR, RCAN, SwinIR, SRResNet).

Every SR model in raykd takes and returns RGB images as float tensors in [0, 1] (N x 3 x H x W in, N x 3 x sH x sW
out; the output is not clamped). Families whose reference code works in [0, 255] (EDSR, RCAN: ``rgb_range=255``)
rescale internally, so their official checkpoints load unchanged and give the official outputs divided by 255.

:func:`load_official` reads the checkpoints released with the reference implementations (plain state dicts for
EDSR-PyTorch and RCAN, ``{'params': ...}`` / ``{'params_ema': ...}`` for SwinIR/BasicSR/KAIR) and loads them
with ``strict=True`` after listing, by name, every key that would not match.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED_SCALES = (2, 3, 4)
# Mean RGB of DIV2K's training HR images, as hard-coded by EDSR-PyTorch, RCAN and SwinIR.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Wrappers around the state dict in BasicSR/KAIR checkpoints, in the order they are preferred: the EMA
# weights are the ones those projects evaluate when both are present.
_PARAM_KEYS = ("params_ema", "params")


def check_scale(scale: int, model: str) -> int:
    """Return ``scale`` if ``model`` is defined for it, else raise a ValueError naming the allowed scales."""
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"{model}: scale={scale!r} is not supported; use one of {SUPPORTED_SCALES}")
    return scale


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
            layers += [nn.Conv2d(channels, factor * factor * channels, 3, padding=1), nn.PixelShuffle(factor)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)


def _read_checkpoint(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    # weights_only: the released .pt/.pth files are plain tensors in (ordered) dicts, so no pickle code runs.
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(checkpoint: Mapping[str, object], param_key: str | None, source: str) -> Mapping[str, torch.Tensor]:
    if param_key is not None:
        if param_key not in checkpoint:
            raise KeyError(f"{source}: no entry {param_key!r}; top-level keys are {sorted(checkpoint)[:10]}")
        state = checkpoint[param_key]
    else:
        state = next((checkpoint[k] for k in _PARAM_KEYS if k in checkpoint), checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{source}: not a state dict (tensor values) nor one wrapped in {list(_PARAM_KEYS)}; "
            f"top-level keys are {sorted(checkpoint)[:10]}; pass param_key= to pick the entry holding the weights"
        )
    return state


def _mismatch_hint(key: str, ckpt_shape: tuple[int, ...]) -> str:
    # SwinIR's stored shifted-window masks have one row per window of the training patch, so a shape
    # mismatch there means the model was built for another img_size; the right one follows from the shape.
    if key.endswith("attn_mask") and len(ckpt_shape) == 3:
        side = math.isqrt(ckpt_shape[0]) * math.isqrt(ckpt_shape[1])
        return f" (the checkpoint was trained on {side}x{side} patches: build the model with img_size={side})"
    return ""


def load_official(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, object],
    param_key: str | None = None,
) -> nn.Module:
    """Load an official released checkpoint into ``model`` with ``strict=True`` and return ``model``.

    ``checkpoint`` is a path (``.safetensors``, else a torch file read with ``weights_only=True``) or an
    already loaded mapping. A state dict wrapped as ``{'params_ema': ...}`` or ``{'params': ...}`` (SwinIR,
    BasicSR, KAIR) is unwrapped, preferring ``params_ema``; ``param_key`` picks another entry. Missing,
    unexpected and wrongly shaped keys are all listed in one ValueError before anything is copied, so a failed
    load leaves ``model`` untouched.
    """
    if isinstance(checkpoint, Mapping):
        source = f"state dict given to load_official({type(model).__name__})"
        raw = checkpoint
    else:
        source = str(checkpoint)
        raw = _read_checkpoint(Path(checkpoint))
    state = _unwrap(raw, param_key, source)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        + _mismatch_hint(k, tuple(state[k].shape))
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                shown = "\n    ".join(items[:10]) + (f"\n    ... and {len(items) - 10} more" if len(items) > 10 else "")
                problems.append(f"  {len(items)} {title}:\n    {shown}")
        raise ValueError(
            f"{source} does not fit {type(model).__name__} (check the model name, scale and config):\n"
            + "\n".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model
