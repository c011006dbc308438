"""MATLAB-compatible bicubic resizing and the ``modcrop`` used to build SR benchmark inputs.

The SR literature (EDSR, RCAN, SwinIR, BasicSR) makes its low-resolution inputs with MATLAB's
``imresize(hr, 1/s, 'bicubic')`` on the HR image cropped to a multiple of ``s``. OpenCV, PIL and
``torch.nn.functional.interpolate`` differ from it (no antialiasing, other border rules, no rounding between
passes), so a model evaluated on their output is not comparable with published tables. :func:`imresize`
reproduces MATLAB's result bit for bit on uint8 images (tested against the benchmark packs' LR files).
"""

from __future__ import annotations

import math

import numpy as np

_CUBIC_WIDTH = 4.0  # support of the Keys kernel, in input pixels


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (Keys 1981, eq. 15), as MATLAB's ``cubic``."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return inner + outer


def _contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices, shape (out_length, taps), for one dimension.

    Follows MATLAB's ``contributions``: output pixel centres map back with ``u = x/scale + (1 - 1/scale)/2``
    (1-based), the kernel is stretched by ``1/scale`` when shrinking (antialiasing), each row of weights is
    normalised to sum to one, out-of-range taps are mirrored (``[1..n, n..1]`` repeated, i.e. symmetric
    padding) and tap columns whose weights are zero for every output pixel are dropped.
    """
    if scale < 1.0:
        width = _CUBIC_WIDTH / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * t)

    else:
        width = _CUBIC_WIDTH
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    period = 2 * in_length
    folded = np.mod(indices.astype(np.int64) - 1, period)
    indices0 = np.where(folded < in_length, folded, period - 1 - folded)
    keep = np.any(weights != 0.0, axis=0)
    return weights[:, keep], indices0[:, keep]


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float64 results back to ``dtype`` as MATLAB does: integers round half away from zero and saturate."""
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype)
    info = np.iinfo(dtype)
    rounded = np.where(values >= 0.0, np.floor(values + 0.5), np.ceil(values - 0.5))
    return np.clip(rounded, info.min, info.max).astype(dtype)


def _resize_axis(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Resize ``img`` along ``axis``; taps are accumulated in order, in float64, as MATLAB's ``imresizemex``."""
    src = img.astype(np.float64, copy=False)
    shape = [1] * img.ndim
    shape[axis] = weights.shape[0]
    out_shape = list(img.shape)
    out_shape[axis] = weights.shape[0]
    out = np.zeros(out_shape, dtype=np.float64)
    for tap in range(weights.shape[1]):
        out += weights[:, tap].reshape(shape) * np.take(src, indices[:, tap], axis=axis)
    return _to_dtype(out, img.dtype)


def imresize(
    img: np.ndarray,
    scale: float | None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize an HxW or HxWxC image with MATLAB's default ``imresize`` (bicubic, antialiased when shrinking).

    Args:
        img: uint8 (or other integer) or floating image, HxW or HxWxC. Floats are not clipped, as in MATLAB.
        scale: factor applied to both sides (``1/4`` to make x4 LR inputs); the output is
            ``ceil(scale * H) x ceil(scale * W)``. Pass ``None`` when ``output_shape`` is given.
        output_shape: ``(rows, cols)`` of the result instead of ``scale``; each side then uses its own factor
            ``out / in``, as MATLAB's ``imresize(img, [rows cols])``.

    Returns:
        The resized image with the input's dtype. Integer images are rounded (half away from zero) and
        saturated after each of the two one-dimensional passes, exactly as MATLAB does; that intermediate
        rounding is needed to reproduce the benchmark LR files.

    The dimension with the smaller factor is resized first (rows first on a tie), MATLAB's ``sort(scale)``.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: img must be HxW or HxWxC, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer)):
        raise TypeError(f"imresize: img dtype {img.dtype} is not supported; pass uint8 or a floating image")
    in_shape = img.shape[:2]
    if (scale is None) == (output_shape is None):
        raise ValueError(
            f"imresize: give exactly one of scale (got {scale}) and output_shape (got {output_shape})"
        )
    if output_shape is not None:
        if len(output_shape) != 2 or min(output_shape) < 1:
            raise ValueError(f"imresize: output_shape must be (rows, cols) of positive ints, got {output_shape}")
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    else:
        if not scale > 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = (math.ceil(scales[0] * in_shape[0]), math.ceil(scales[1] * in_shape[1]))
    # Stable sort: the smaller factor first, rows first when equal (MATLAB's dimensionOrder).
    order = sorted(range(2), key=lambda axis: scales[axis])
    out = img
    for axis in order:
        weights, indices = _contributions(in_shape[axis], out_shape[axis], scales[axis])
        out = _resize_axis(out, axis, weights, indices)
    return out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right edges so that H and W are multiples of ``scale`` (the HR side of an SR pair)."""
    if scale < 1:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
