from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from raykd.losses.figkd import FiGKDLoss, figkd_hf_loss, logits_to_matrix


def _matrix_ref(z: np.ndarray, level: int) -> np.ndarray:
    """Independent layout: H = floor(sqrt(C)), W = ceil(C / H), zero fill, sides padded to multiples of 2^level."""
    c = z.shape[0]
    h = int(np.floor(np.sqrt(c)))
    w = -(-c // h)
    m = 2**level
    out = np.zeros((math.ceil(h / m) * m, math.ceil(w / m) * m))
    flat = np.zeros(h * w)
    flat[:c] = z
    out[:h, :w] = flat.reshape(h, w)
    return out


def _hf_ref(s: np.ndarray, t: np.ndarray, T: float, wavelet: str, level: int, distance: str) -> float:
    """Mean over the 3*level detail subbands of the per-subband mean distance, batch included, via PyWavelets."""
    per_band: list[list[np.ndarray]] = []
    for i in range(s.shape[0]):
        cs = pywt.wavedec2(_matrix_ref(s[i] / T, level), wavelet, mode="periodization", level=level)
        ct = pywt.wavedec2(_matrix_ref(t[i] / T, level), wavelet, mode="periodization", level=level)
        diffs = [bs - bt for ds, dt in zip(cs[1:], ct[1:]) for bs, bt in zip(ds, dt)]
        per_band.append(diffs)
    loss = 0.0
    for k in range(3 * level):
        d = np.stack([sample[k] for sample in per_band])
        loss += np.mean(d**2) if distance == "mse" else np.mean(np.abs(d))
    return loss / (3 * level)


@pytest.mark.parametrize(
    ("c", "level", "shape"),
    [(100, 1, (10, 10)), (200, 1, (14, 16)), (1000, 1, (32, 34)), (37, 2, (8, 8)), (3, 1, (2, 4)), (1, 2, (4, 4))],
)
def test_logits_to_matrix_layout(c: int, level: int, shape: tuple[int, int]) -> None:
    z = torch.arange(1, 2 * c + 1, dtype=torch.float64).view(2, c)
    m = logits_to_matrix(z, level=level)
    assert tuple(m.shape) == (2, *shape)
    for i in range(2):
        np.testing.assert_array_equal(m[i].numpy(), _matrix_ref(z[i].numpy(), level))


@pytest.mark.parametrize(
    ("c", "T", "wavelet", "level", "distance"),
    [
        (100, 1.0, "haar", 1, "mse"),  # perfect square
        (37, 1.0, "haar", 1, "mse"),  # not a square: 6 x 7 grid padded to 6 x 8
        (200, 4.0, "haar", 1, "l1"),  # T != 1, L1
        (3, 1.0, "haar", 1, "mse"),  # C < 4
        (2, 2.0, "haar", 2, "l1"),  # C < 4, two levels
        (100, 2.0, "haar", 2, "mse"),  # two levels: 12 x 12
        (100, 1.0, "db2", 1, "mse"),  # another filter bank
    ],
)
def test_hf_loss_matches_pywavelets(c: int, T: float, wavelet: str, level: int, distance: str) -> None:
    g = torch.Generator().manual_seed(c + level)
    s = torch.randn(3, c, generator=g, dtype=torch.float64) * 4
    t = torch.randn(3, c, generator=g, dtype=torch.float64) * 4
    got = figkd_hf_loss(s, t, T=T, wavelet=wavelet, level=level, distance=distance)
    ref = _hf_ref(s.numpy(), t.numpy(), T, wavelet, level, distance)
    assert got.item() == pytest.approx(ref, rel=1e-9)
    assert FiGKDLoss(T=T, wavelet=wavelet, level=level, distance=distance)(s, t).item() == pytest.approx(ref, rel=1e-9)


def test_low_frequency_content_is_not_matched() -> None:
    """Adding a pattern that is constant on every Haar 2x2 block changes only cA, so the loss stays zero."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 100, generator=g, dtype=torch.float64)
    blocks = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
    lowpass = blocks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(2, 100)
    s = t + 3 * lowpass
    assert figkd_hf_loss(s, t).item() == pytest.approx(0.0, abs=1e-12)
    assert figkd_hf_loss(s + 0.1 * torch.randn(2, 100, generator=g, dtype=torch.float64), t).item() > 1e-6


def test_gradients_reach_the_student_only() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 10, generator=g, requires_grad=True)
    t = torch.randn(4, 10, generator=g, requires_grad=True)
    figkd_hf_loss(s, t, T=2.0, level=2).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_invalid_options_are_rejected() -> None:
    z = torch.zeros(2, 10)
    with pytest.raises(ValueError, match="distance"):
        figkd_hf_loss(z, z, distance="kl")
    with pytest.raises(ValueError, match="wavelet"):
        FiGKDLoss(wavelet="nope")
    with pytest.raises(ValueError, match="level"):
        logits_to_matrix(z, level=0)
    with pytest.raises(ValueError, match="T must be > 0"):
        FiGKDLoss(T=-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        figkd_hf_loss(z, torch.zeros(2, 11))
