from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from raykd.data.degrade import imresize, modcrop
from raykd.metrics import psnr, psnr_torch, rgb_to_y, ssim, ssim_torch

SCALES = (2, 3, 4)
# Bicubic upscaling of the Set5 LR inputs, BasicSR convention (Y kept in float), as BasicSR's own scripts report.
BASICSR_SET5 = {2: (33.673, 0.9303), 3: (30.403, 0.8689), 4: (28.429, 0.8111)}
# The published table (SRCNN, VDSR, EDSR, RCAN, SwinIR all copy it).
PUBLISHED_SET5 = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


@pytest.fixture(scope="module")
def set5_bicubic(shared_data: Path) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Per scale, (bicubic upscale of the benchmark LR input, modcropped HR) for the five Set5 images."""
    root = shared_data / "sr" / "Set5"
    pairs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in SCALES}
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path))
        for s in SCALES:
            lr = np.asarray(Image.open(root / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png"))
            pairs[s].append((imresize(lr, s), modcrop(hr, s)))
    assert all(len(p) == 5 for p in pairs.values()), "Set5 should hold 5 images"
    return pairs


@pytest.mark.parametrize("scale", SCALES)
def test_set5_bicubic_basicsr_convention(set5_bicubic, scale: int) -> None:
    pairs = set5_bicubic[scale]
    mean_psnr = np.mean([psnr(sr, hr, scale) for sr, hr in pairs])
    mean_ssim = np.mean([ssim(sr, hr, scale) for sr, hr in pairs])
    ref_psnr, ref_ssim = BASICSR_SET5[scale]
    assert abs(mean_psnr - ref_psnr) < 0.005, mean_psnr
    assert abs(mean_ssim - ref_ssim) < 0.0005, mean_ssim


@pytest.mark.parametrize("scale", SCALES)
def test_set5_bicubic_y_rounding_is_near_published_table(set5_bicubic, scale: int) -> None:
    """MATLAB's uint8 ``rgb2ycbcr`` rounds Y; measured 33.640/0.9292, 30.385/0.8678, 28.417/0.8101.

    The published table itself came from a Y-only degradation (next test), so RGB LR files land up to 0.021 dB
    and 0.0008 SSIM away from it.
    """
    pairs = set5_bicubic[scale]
    mean_psnr = np.mean([psnr(sr, hr, scale, y_rounding=True) for sr, hr in pairs])
    mean_ssim = np.mean([ssim(sr, hr, scale, y_rounding=True) for sr, hr in pairs])
    ref_psnr, ref_ssim = PUBLISHED_SET5[scale]
    assert abs(mean_psnr - ref_psnr) < 0.025, mean_psnr
    assert abs(mean_ssim - ref_ssim) < 0.001, mean_ssim
    assert mean_psnr < np.mean([psnr(sr, hr, scale) for sr, hr in pairs])  # rounding Y only adds error here


@pytest.mark.parametrize("scale", SCALES)
def test_set5_published_table_from_y_only_protocol(set5_bicubic, scale: int) -> None:
    """SRCNN's protocol behind the published bicubic rows: Y of the HR (uint8 rgb2ycbcr), bicubic down and up
    in double precision, quantised, measured with a ``scale`` border. It reproduces the table to its last digit.
    """
    psnrs, ssims = [], []
    for _, hr in set5_bicubic[scale]:
        y_hr = np.floor(rgb_to_y(hr / 255.0) + 0.5) / 255.0
        y_bic = imresize(imresize(y_hr, 1 / scale), scale)
        psnrs.append(psnr(y_bic, y_hr, scale))
        ssims.append(ssim(y_bic, y_hr, scale))
    ref_psnr, ref_ssim = PUBLISHED_SET5[scale]
    assert abs(np.mean(psnrs) - ref_psnr) < 0.005, np.mean(psnrs)
    assert abs(np.mean(ssims) - ref_ssim) < 0.00005, np.mean(ssims)


def test_ssim_matches_scikit_image_on_y(set5_bicubic) -> None:
    for scale in (2, 4):
        for sr, hr in set5_bicubic[scale][:2]:
            c = slice(scale, -scale)
            y_sr, y_hr = rgb_to_y(sr[c, c] / 255.0), rgb_to_y(hr[c, c] / 255.0)
            expected = structural_similarity(
                y_sr, y_hr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
            )
            assert ssim(sr, hr, scale) == pytest.approx(expected, abs=1e-9)


def test_rgb_ssim_averages_channels_like_scikit_image() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(
        a.astype(np.float64), b.astype(np.float64), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    )
    assert ssim(a, b, 0, y_channel=False) == pytest.approx(expected, abs=1e-9)


def test_rgb_to_y_matches_scikit_image_bt601() -> None:
    rgb = np.random.default_rng(1).random((8, 9, 3))
    np.testing.assert_allclose(rgb_to_y(rgb), rgb2ycbcr(rgb)[..., 0], atol=1e-10)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)


def test_psnr_hand_formula_and_border_crop() -> None:
    ref = np.full((20, 20, 3), 100, dtype=np.uint8)
    img = ref.copy()
    img[..., 0] += 10  # only red: Y differs by 10 * 65.481 / 255
    dy = 10 * 65.481 / 255
    assert psnr(img, ref, 0) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)
    # Over RGB, one channel of three differs by 10.
    assert psnr(img, ref, 0, y_channel=False) == pytest.approx(10 * math.log10(255**2 / (100 / 3)), abs=1e-9)
    border_only = ref.copy()
    border_only[:3] = 0
    border_only[:, -3:] = 255
    assert psnr(border_only, ref, 3) == math.inf
    assert psnr(border_only, ref, 2) < 100


def test_y_rounding_rounds_luma_half_away_from_zero() -> None:
    # RGB (1, 0, 0) gives Y = 16.2568 -> 16 and (2, 0, 0) gives 16.5136 -> 17, so rounding changes the error.
    a = np.zeros((12, 12, 3), dtype=np.uint8)
    b = a.copy()
    b[..., 0] = 2
    dy_float = 2 * 65.481 / 255
    assert psnr(b, a, 0) == pytest.approx(10 * math.log10(255**2 / dy_float**2), abs=1e-9)
    assert psnr(b, a, 0, y_rounding=True) == pytest.approx(10 * math.log10(255**2 / 1.0), abs=1e-9)


def test_float_inputs_are_quantised_like_uint8() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    # Sub-level noise and slight overshoot vanish in the quantisation to uint8 levels.
    a_float = np.clip(a / 255.0 + rng.uniform(-0.4, 0.4, a.shape) / 255.0, -0.01, 1.01)
    a_float[a == 255] = 1.01
    a_float[a == 0] = -0.01
    assert psnr(a_float, b, 4) == pytest.approx(psnr(a, b, 4), abs=1e-12)
    assert ssim(a_float, b, 4) == pytest.approx(ssim(a, b, 4), abs=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(a.astype(np.float64), b, 4)


def test_greyscale_is_measured_on_its_own_values() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    mse = np.mean((a[2:-2, 2:-2].astype(float) - b[2:-2, 2:-2]) ** 2)
    assert psnr(a, b, 2) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert ssim(a, b, 2) == pytest.approx(ssim(a, b, 2, y_channel=False), abs=0)
    assert psnr(a[..., None], b[..., None], 2) == psnr(a, b, 2)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differs from ref shape"):
        psnr(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8), 5)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(("y_channel", "y_rounding"), [(True, False), (True, True), (False, False)])
def test_torch_batch_agrees_with_numpy(set5_bicubic, channels: int, y_channel: bool, y_rounding: bool) -> None:
    crops = [(sr[:48, :40], hr[:48, :40]) for sr, hr in set5_bicubic[4][:3]]
    if channels == 1:
        crops = [(sr[..., 1], hr[..., 1]) for sr, hr in crops]
    # Floats carrying sub-level noise exercise the quantisation inside the torch path.
    noise = np.random.default_rng(4).uniform(-0.3, 0.3, (len(crops), 48, 40, channels)) / 255.0
    sr_batch = torch.from_numpy(np.stack([sr.reshape(48, 40, channels) for sr, _ in crops]) / 255.0 + noise)
    hr_batch = torch.from_numpy(np.stack([hr.reshape(48, 40, channels) for _, hr in crops]) / 255.0)
    sr_batch, hr_batch = sr_batch.permute(0, 3, 1, 2).float(), hr_batch.permute(0, 3, 1, 2).float()
    got_psnr = psnr_torch(sr_batch, hr_batch, 4, y_channel=y_channel, y_rounding=y_rounding)
    got_ssim = ssim_torch(sr_batch, hr_batch, 4, y_channel=y_channel, y_rounding=y_rounding)
    assert got_psnr.shape == got_ssim.shape == (len(crops),)
    for i, (sr, hr) in enumerate(crops):
        assert float(got_psnr[i]) == pytest.approx(psnr(sr, hr, 4, y_channel, y_rounding), abs=1e-9)
        assert float(got_ssim[i]) == pytest.approx(ssim(sr, hr, 4, y_channel, y_rounding), abs=1e-9)


def test_torch_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    x = torch.rand(2, 3, 20, 20)
    assert torch.isinf(psnr_torch(x, x, 2)).all()
    assert torch.allclose(ssim_torch(x, x, 2), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr_torch(x * 255, x, 2)
