"""MTKD's wavelet loss and stage-2 objective, checked against PyWavelets and hand formulas."""
from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from raykd.losses.sr import mtkd_loss, wavelet_loss


def _images(seed: int, shape=(2, 3, 16, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64)


def _pywt_wavelet_loss(a: np.ndarray, b: np.ndarray, levels: int, wavelet: str, mode: str) -> float:
    """1/(3K+1) * (|LL_K| + sum_k |LH_k| + |HL_k| + |HH_k|), each band's mean absolute difference."""
    ca = pywt.wavedec2(a, wavelet, mode=mode, level=levels, axes=(-2, -1))
    cb = pywt.wavedec2(b, wavelet, mode=mode, level=levels, axes=(-2, -1))
    bands = [(ca[0], cb[0])] + [(x, y) for da, db in zip(ca[1:], cb[1:]) for x, y in zip(da, db)]
    assert len(bands) == 3 * levels + 1
    return float(np.mean([np.abs(x - y).mean() for x, y in bands]))


@pytest.mark.parametrize(("wavelet", "levels", "mode"), [("haar", 1, "periodization"), ("haar", 2, "periodization"),
                                                         ("db2", 2, "periodization"), ("db2", 1, "symmetric")])
def test_wavelet_loss_matches_pywavelets(wavelet: str, levels: int, mode: str) -> None:
    s, t = _images(0)
    got = wavelet_loss(s, t, levels=levels, wavelet=wavelet, mode=mode)
    assert got.dtype == torch.float32  # computed in float32 whatever the input
    expected = _pywt_wavelet_loss(s.numpy(), t.numpy(), levels, wavelet, mode)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_wavelet_loss_is_zero_for_equal_images_and_reaches_only_the_student() -> None:
    s, t = (x.float() for x in _images(1))
    assert wavelet_loss(s, s.clone()).item() == 0.0
    s.requires_grad_(True)
    t.requires_grad_(True)
    wavelet_loss(s, t, levels=2).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_wavelet_loss_stays_float32_under_autocast() -> None:
    s, t = (x.float() for x in _images(2, (2, 3, 32, 32)))
    t = s + 1e-3 * t  # differences as small as those between a student and the aggregated teacher
    reference = wavelet_loss(s, t, levels=2).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert wavelet_loss(s, t, levels=2).item() == pytest.approx(reference, rel=1e-6)


def test_mtkd_loss_weights_gt_l1_by_alpha_and_adds_the_wavelet_term() -> None:
    s, agg = (x.float() for x in _images(3))
    hr = torch.rand_like(s)
    for alpha in (0.0, 0.1, 0.7):
        expected = alpha * (s - hr).abs().mean() + _pywt_wavelet_loss(s.double().numpy(), agg.double().numpy(), 1,
                                                                      "haar", "periodization")
        assert mtkd_loss(s, agg, hr, alpha=alpha).item() == pytest.approx(expected.item(), rel=1e-5)
    # a student equal to the aggregated image leaves only the weighted GT term
    assert mtkd_loss(agg, agg, hr, alpha=0.3).item() == pytest.approx(0.3 * F.l1_loss(agg, hr).item(), rel=1e-6)
    assert mtkd_loss(s, agg, hr, levels=2, wavelet="db2").item() == pytest.approx(
        0.1 * F.l1_loss(s, hr).item() + wavelet_loss(s, agg, levels=2, wavelet="db2").item(), rel=1e-6)


def test_wavelet_loss_rejects_bad_arguments() -> None:
    s, t = (x.float() for x in _images(4))
    with pytest.raises(ValueError, match="same"):
        wavelet_loss(s, t[:, :, :8])
    with pytest.raises(ValueError, match="levels must be an integer >= 1"):
        wavelet_loss(s, t, levels=0)
    with pytest.raises(ValueError, match="largest allowed level"):
        wavelet_loss(s, t, levels=6)
    assert wavelet_loss(s, t, levels=np.int64(2)).item() == pytest.approx(wavelet_loss(s, t, levels=2).item())
