from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raykd.data.degrade import imresize, modcrop


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("benchmark", ["Set5", "Set14"])
def test_regenerates_benchmark_lr_files_exactly(shared_data: Path, benchmark: str) -> None:
    """MATLAB imresize(modcrop(hr, s), 1/s) made the LR packs; every pixel must match (bridge.png is grey)."""
    root = shared_data / "sr" / benchmark
    hr_paths = sorted((root / "HR").glob("*.png"))
    assert hr_paths, f"no HR images under {root / 'HR'}"
    mismatches = []
    for hr_path in hr_paths:
        hr = _read(hr_path)
        for s in (2, 3, 4):
            lr = _read(root / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png")
            out = imresize(modcrop(hr, s), 1 / s)
            assert out.dtype == np.uint8 and out.shape == lr.shape, (hr_path.name, s, out.shape, lr.shape)
            differing = int(np.count_nonzero(out != lr))
            if differing:
                mismatches.append((hr_path.name, s, differing))
    assert not mismatches, f"(image, scale, differing pixels): {mismatches}"


@pytest.mark.parametrize("out_shape", [(74, 82), (111, 123), (18, 20), (9, 10), (26, 29), (50, 30)])
def test_interior_matches_pillow_bicubic(out_shape: tuple[int, int]) -> None:
    """Away from the borders MATLAB's and Pillow's antialiased Keys (a=-0.5) resamplers are the same filter."""
    x = np.random.default_rng(0).random((37, 41))
    ours = imresize(x, None, output_shape=out_shape)
    pil = Image.fromarray(x.astype(np.float32), mode="F").resize(out_shape[::-1], Image.Resampling.BICUBIC)
    pil = np.asarray(pil, dtype=np.float64)
    # Pillow renormalises at the borders where MATLAB mirrors, so compare where the kernel stays inside.
    my, mx = (max(3, 2 * math.ceil(out_shape[i] / x.shape[i]) + 2) for i in range(2))
    np.testing.assert_allclose(ours[my:-my, mx:-mx], pil[my:-my, mx:-mx], atol=1e-6)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscaling_reproduces_quadratics_in_the_interior(factor: int) -> None:
    """Keys' a=-0.5 kernel interpolates polynomials up to degree 2 exactly (Keys 1981, sec. III)."""
    rows = np.arange(20, dtype=np.float64)
    cols = np.arange(24, dtype=np.float64)

    def quad(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return 0.3 * r**2 - 1.7 * r * c + 0.05 * c**2 + 2.0 * c + 4.0

    img = quad(rows[:, None], cols[None, :])
    out = imresize(img, factor)
    assert out.shape == (20 * factor, 24 * factor)
    # Output pixel j (0-based) sits at input coordinate (j + 0.5) / factor - 0.5.
    r = (np.arange(out.shape[0]) + 0.5) / factor - 0.5
    c = (np.arange(out.shape[1]) + 0.5) / factor - 0.5
    expected = quad(r[:, None], c[None, :])
    m = 2 * factor + 1
    np.testing.assert_allclose(out[m:-m, m:-m], expected[m:-m, m:-m], atol=1e-9)


@pytest.mark.parametrize("scale", [2, 1 / 2, 1 / 4])
def test_borders_use_symmetric_padding(scale: float) -> None:
    """Resizing a symmetrically padded image and cropping must equal resizing the image: MATLAB mirrors taps."""
    img = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    pad = 8  # deeper than the widest kernel reach (2 / (1/4)) and a multiple of every 1/scale
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    crop = int(pad * scale)
    expected = imresize(padded, scale)[crop:-crop, crop:-crop]
    np.testing.assert_array_equal(imresize(img, scale), expected)


def test_uint8_rounds_between_passes_and_resizes_smaller_factor_first() -> None:
    """MATLAB resizes the dimension with the smaller factor first and stores the intermediate as uint8."""
    img = np.random.default_rng(2).integers(0, 256, (40, 36), dtype=np.uint8)
    out_shape = (30, 12)  # column factor 1/3 < row factor 3/4: columns go first

    def as_uint8(a: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)

    cols_first = imresize(img.astype(np.float64), None, output_shape=(40, 12))
    expected = as_uint8(imresize(as_uint8(cols_first).astype(np.float64), None, output_shape=out_shape))
    rows_first = imresize(img.astype(np.float64), None, output_shape=(30, 36))
    other_order = as_uint8(imresize(as_uint8(rows_first).astype(np.float64), None, output_shape=out_shape))
    out = imresize(img, None, output_shape=out_shape)
    np.testing.assert_array_equal(out, expected)
    assert np.any(out != other_order), "test image too smooth to tell the two orders apart"


@pytest.mark.parametrize("shape", [(17, 23), (17, 23, 3), (31, 8, 1), (5, 5, 4)])
@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.7, 2, 3, 1.5])
def test_output_size_is_ceil_of_scaled_input(shape: tuple[int, ...], scale: float) -> None:
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale), *shape[2:])
    assert out.dtype == np.uint8


def test_output_shape_argument_and_float_behaviour() -> None:
    x = np.zeros((16, 16), dtype=np.float32)
    x[:, 8:] = 1.0  # a step edge: bicubic rings past the input range, and floats keep the overshoot
    out = imresize(x, None, output_shape=(10, 7))
    assert out.shape == (10, 7) and out.dtype == np.float32
    up = imresize(x, 3)
    assert up.dtype == np.float32 and up.max() > 1.0 and up.min() < 0.0
    constant = np.full((13, 9, 3), 0.4375)
    for scale in (1 / 3, 2.5):
        np.testing.assert_allclose(imresize(constant, scale), 0.4375, atol=1e-12)


def test_uint8_saturates_instead_of_wrapping() -> None:
    x = np.zeros((16, 16), dtype=np.uint8)
    x[:, 8:] = 255
    out = imresize(x, 3)
    assert out.dtype == np.uint8
    # Overshoot near the edge saturates at 255 and undershoot at 0 (wrapping would put dark pixels in white).
    step_row = out[20]
    assert step_row[:20].max() == 0 and step_row[28:].min() == 255


def test_modcrop() -> None:
    img = np.arange(17 * 23 * 3).reshape(17, 23, 3)
    cropped = modcrop(img, 4)
    assert cropped.shape == (16, 20, 3)
    np.testing.assert_array_equal(cropped, img[:16, :20])
    assert modcrop(img[:, :, 0], 3).shape == (15, 21)


def test_rejects_ambiguous_or_bad_arguments() -> None:
    img = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one of scale"):
        imresize(img, 0.5, output_shape=(4, 4))
    with pytest.raises(ValueError, match="exactly one of scale"):
        imresize(img, None)
    with pytest.raises(ValueError, match="HxW or HxWxC"):
        imresize(np.zeros((1, 8, 8, 3)), 0.5)
    with pytest.raises(ValueError, match="positive"):
        modcrop(img, 0)
