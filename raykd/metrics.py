"""PSNR and SSIM exactly as the SR literature measures them.

Convention (BasicSR, and the MATLAB scripts behind the EDSR/RCAN/SwinIR tables): both images are quantised to
uint8 levels, ``crop_border`` pixels (usually the scale) are cut from every side, and RGB images are measured on
the Y channel of BT.601 YCbCr. SSIM is Wang et al. 2004 (eq. 13) with an 11x11 Gaussian window (sigma 1.5),
``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, computed only where the window fits ('valid'), averaged over
the map and then over channels.

Inputs: uint8 images, or floats in [0, 1] which are clamped to [0, 1] (SR outputs overshoot slightly; BasicSR
clamps the same way) and rounded to ``round(255 * x)`` levels. Floats above 2 are refused, because they mean a
[0, 255] image was passed as [0, 1]. Greyscale images (HxW, HxWx1 or C=1) are measured on their own values:
the Y channel of a grey image is the image itself, as in the MATLAB evaluation scripts.

One option, ``y_rounding``, picks the Y convention of every function here:

- ``y_rounding=False`` (default): Y kept in float, as BasicSR's ``calculate_psnr/ssim(test_y_channel=True)``;
- ``y_rounding=True``: Y rounded to uint8 levels, as MATLAB's ``rgb2ycbcr`` does on uint8 input (the MATLAB
  scripts behind the EDSR/RCAN/SwinIR tables). It reproduces the published tables: the bicubic rows to about
  0.02 dB, and DVMSR's released x4 model on Set5 (32.19 dB, Table 1) to the digit, where float Y gives 0.02 dB
  more (32.21). The two differ most in SSIM (DVMSR, Set5 x4: 0.8940 rounded, 0.8951 float; published 0.8955).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_BT601_Y = (65.481, 128.553, 24.966)  # ITU-R BT.601 luma weights for RGB in [0, 1] -> Y in [16, 235]
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_FLOAT_RANGE_LIMIT = 2.0  # a float image above this was certainly given in [0, 255]


def _gaussian_1d() -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
    x = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image in [0, 1] (HxWx3): ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``, in [16, 235]."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y: expected an HxWx3 RGB image in [0, 1], got shape {img.shape}")
    return img.astype(np.float64) @ np.asarray(_BT601_Y) + 16.0


def _quantise(img: np.ndarray, name: str) -> np.ndarray:
    """uint8 levels as float64, from uint8 or from floats in [0, 1] (clamped, rounded half to even)."""
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"{name}: dtype {img.dtype} is not supported; pass uint8, or floats in [0, 1]")
    if img.size and float(np.nanmax(img)) > _FLOAT_RANGE_LIMIT:
        raise ValueError(
            f"{name}: float image has values up to {float(np.nanmax(img)):.1f}; floats must be in [0, 1] "
            "(divide by 255, or pass uint8)"
        )
    return np.round(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0)


def _prepare(
    img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool, y_rounding: bool, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Quantise, crop and (for RGB) convert to Y; returns two HxWxC float64 arrays of uint8-scale values."""
    if img.shape != ref.shape:
        raise ValueError(f"{name}: img shape {img.shape} differs from ref shape {ref.shape}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name}: expected HxW or HxWxC images, got shape {img.shape}")
    if crop_border < 0:
        raise ValueError(f"{name}: crop_border must be >= 0, got {crop_border}")
    out = []
    for arr in (img, ref):
        levels = _quantise(arr, name)
        if levels.ndim == 2:
            levels = levels[:, :, None]
        if crop_border:
            levels = levels[crop_border:-crop_border, crop_border:-crop_border]
        if y_channel and levels.shape[2] == 3:
            y = rgb_to_y(levels / 255.0)
            # Y > 0, so floor(y + 0.5) is MATLAB's round-half-away-from-zero.
            levels = (np.floor(y + 0.5) if y_rounding else y)[:, :, None]
        out.append(levels)
    if out[0].shape[0] == 0 or out[0].shape[1] == 0:
        raise ValueError(f"{name}: crop_border={crop_border} leaves nothing of a {img.shape[:2]} image")
    return out[0], out[1]


def psnr(
    img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True, y_rounding: bool = False
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)``, over all kept pixels and channels.

    Returns ``inf`` for identical images.
    """
    a, b = _prepare(img, ref, crop_border, y_channel, y_rounding, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an HxW array with the outer product of ``g`` with itself."""
    n = g.size
    rows = sum(g[k] * x[k : x.shape[0] - n + 1 + k] for k in range(n))
    return sum(g[k] * rows[:, k : rows.shape[1] - n + 1 + k] for k in range(n))


def _ssim_2d(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, eq. 13) of one channel, local statistics under the Gaussian window."""
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a**2 + mu_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float(np.mean(num / den))


def ssim(
    img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True, y_rounding: bool = False
) -> float:
    """Structural similarity: mean SSIM map per channel, averaged over channels (one channel when on Y)."""
    a, b = _prepare(img, ref, crop_border, y_channel, y_rounding, "ssim")
    if min(a.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"ssim: cropped image {a.shape[:2]} is smaller than the {_SSIM_WINDOW}x{_SSIM_WINDOW} window")
    g = _gaussian_1d()
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c], g) for c in range(a.shape[2])]))


def _prepare_torch(
    img: torch.Tensor, ref: torch.Tensor, crop_border: int, y_channel: bool, y_rounding: bool, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`_prepare` on (B, C, H, W) floats in [0, 1]; float64 so it agrees with numpy."""
    if img.shape != ref.shape:
        raise ValueError(f"{name}: img shape {tuple(img.shape)} differs from ref shape {tuple(ref.shape)}")
    if img.ndim != 4 or img.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected (B, C, H, W) with C in (1, 3), got {tuple(img.shape)}")
    if not (img.is_floating_point() and ref.is_floating_point()):
        raise TypeError(f"{name}: expected float tensors in [0, 1], got {img.dtype} and {ref.dtype}")
    if crop_border < 0:
        raise ValueError(f"{name}: crop_border must be >= 0, got {crop_border}")
    top = float(torch.maximum(img.detach().amax(), ref.detach().amax()))
    if top > _FLOAT_RANGE_LIMIT:
        raise ValueError(
            f"{name}: tensor has values up to {top:.1f}; inputs must be in [0, 1] (divide by 255)"
        )
    coeffs = torch.tensor(_BT601_Y, dtype=torch.float64, device=img.device).view(1, 3, 1, 1)
    out = []
    for t in (img, ref):
        levels = torch.round(t.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0)
        if crop_border:
            levels = levels[:, :, crop_border:-crop_border, crop_border:-crop_border]
        if y_channel and levels.shape[1] == 3:
            y = (levels / 255.0 * coeffs).sum(dim=1, keepdim=True) + 16.0
            levels = torch.floor(y + 0.5) if y_rounding else y
        out.append(levels)
    if out[0].shape[2] == 0 or out[0].shape[3] == 0:
        raise ValueError(f"{name}: crop_border={crop_border} leaves nothing of a {tuple(img.shape[2:])} image")
    return out[0], out[1]


def psnr_torch(
    img: torch.Tensor, ref: torch.Tensor, crop_border: int, y_channel: bool = True, y_rounding: bool = False
) -> torch.Tensor:
    """Per-image PSNR (B,) of (B, C, H, W) float batches in [0, 1], same convention as :func:`psnr`."""
    a, b = _prepare_torch(img, ref, crop_border, y_channel, y_rounding, "psnr_torch")
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 gives inf, as psnr does


def ssim_torch(
    img: torch.Tensor, ref: torch.Tensor, crop_border: int, y_channel: bool = True, y_rounding: bool = False
) -> torch.Tensor:
    """Per-image SSIM (B,) of (B, C, H, W) float batches in [0, 1], same convention as :func:`ssim`."""
    a, b = _prepare_torch(img, ref, crop_border, y_channel, y_rounding, "ssim_torch")
    if min(a.shape[2:]) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim_torch: cropped image {tuple(a.shape[2:])} is smaller than the {_SSIM_WINDOW}x{_SSIM_WINDOW} window"
        )
    channels = a.shape[1]
    g = torch.from_numpy(_gaussian_1d()).to(device=a.device)
    g_rows = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    g_cols = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, g_rows, groups=channels), g_cols, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a**2 + mu_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return (num / den).flatten(1).mean(dim=1)
