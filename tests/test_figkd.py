from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from raykd.losses.figkd import FiGKDLoss, figkd_hf_loss, logits_to_matrix, max_level


def _matrix_ref(z: np.ndarray, level: int, wavelet: str = "haar") -> np.ndarray:
    """Independent layout: H = floor(sqrt(C)), W = ceil(C / H), the last logit repeated to fill the grid, then the
    last row / column repeated until both sides are multiples of 2^level and at least (taps - 1) * 2^level."""
    c = z.shape[0]
    h = int(np.floor(np.sqrt(c)))
    w = -(-c // h)
    m = 2**level
    least = (pywt.Wavelet(wavelet).dec_len - 1) * m
    flat = np.concatenate([z, np.full(h * w - c, z[-1])])
    sides = [math.ceil(max(n, least) / m) * m for n in (h, w)]
    return np.pad(flat.reshape(h, w), ((0, sides[0] - h), (0, sides[1] - w)), mode="edge")


def _hf_ref(
    s: np.ndarray, t: np.ndarray, T: float, wavelet: str, level: int, distance: str, bands: str = "high"
) -> float:
    """Mean over the matched subbands of the per-subband mean distance, batch included, via PyWavelets."""
    per_band: list[list[np.ndarray]] = []
    for i in range(s.shape[0]):
        cs = pywt.wavedec2(_matrix_ref(s[i] / T, level, wavelet), wavelet, mode="periodization", level=level)
        ct = pywt.wavedec2(_matrix_ref(t[i] / T, level, wavelet), wavelet, mode="periodization", level=level)
        diffs = [cs[0] - ct[0]] if bands in ("low", "all") else []
        if bands in ("high", "all"):
            diffs += [bs - bt for ds, dt in zip(cs[1:], ct[1:]) for bs, bt in zip(ds, dt)]
        per_band.append(diffs)
    terms = []
    for k in range(len(per_band[0])):
        d = np.stack([sample[k] for sample in per_band])
        terms.append(np.mean(d**2) if distance == "mse" else np.mean(np.abs(d)))
    return float(np.mean(terms))


@pytest.mark.parametrize(
    ("c", "level", "shape"),
    [(100, 1, (10, 10)), (200, 1, (14, 16)), (1000, 1, (32, 34)), (37, 2, (8, 8)), (3, 1, (2, 4)), (1, 1, (2, 2)),
     (67, 3, (8, 16))],
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
        (2, 2.0, "haar", 1, "l1"),  # C < 4
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


@pytest.mark.parametrize("c", [200, 67, 100])
@pytest.mark.parametrize("wavelet, level", [("haar", 1), ("haar", 2), ("db2", 1)])
def test_adding_a_constant_to_every_logit_changes_nothing(c: int, wavelet: str, level: int) -> None:
    """The filler adds no detail: shifting all logits (softmax and ranking unchanged) leaves LH, HL, HH alone."""
    g = torch.Generator().manual_seed(c)
    s = torch.randn(4, c, generator=g, dtype=torch.float64) * 3
    t = torch.randn(4, c, generator=g, dtype=torch.float64) * 3
    base = figkd_hf_loss(s, t, wavelet=wavelet, level=level)
    for shift_s, shift_t in ((5.0, 0.0), (0.0, -12.5), (100.0, 100.0), (-3.0, 7.0)):
        shifted = figkd_hf_loss(s + shift_s, t + shift_t, wavelet=wavelet, level=level)
        assert shifted.item() == pytest.approx(base.item(), rel=1e-10, abs=1e-12)
    # per-row constants too: each sample's matrix moves as a whole
    row_shift = torch.randn(4, 1, generator=g, dtype=torch.float64) * 50
    assert figkd_hf_loss(s + row_shift, t, wavelet=wavelet, level=level).item() == pytest.approx(base.item(), rel=1e-10)
    # the low band does see the shift
    assert figkd_hf_loss(s + 5.0, t, bands="low").item() > figkd_hf_loss(s, t, bands="low").item()


@pytest.mark.parametrize("bands", ["low", "all"])
def test_band_choices_of_table_vi_match_pywavelets(bands: str) -> None:
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(3, 100, generator=g, dtype=torch.float64), torch.randn(3, 100, generator=g, dtype=torch.float64)
    for level in (1, 2):
        ref = _hf_ref(s.numpy(), t.numpy(), 2.0, "haar", level, "mse", bands)
        assert figkd_hf_loss(s, t, T=2.0, level=level, bands=bands).item() == pytest.approx(ref, rel=1e-9)
        assert FiGKDLoss(T=2.0, level=level, bands=bands)(s, t).item() == pytest.approx(ref, rel=1e-9)


def test_loss_scales_as_one_over_t_squared() -> None:
    """No softmax: T and the loss weight are the same knob (MSE scales as 1/T^2, L1 as 1/T)."""
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(2, 100, generator=g, dtype=torch.float64), torch.randn(2, 100, generator=g, dtype=torch.float64)
    assert figkd_hf_loss(s, t, T=4.0).item() == pytest.approx(figkd_hf_loss(s, t).item() / 16, rel=1e-12)
    assert figkd_hf_loss(s, t, T=4.0, distance="l1").item() == pytest.approx(
        figkd_hf_loss(s, t, distance="l1").item() / 4, rel=1e-12)


def test_max_level_follows_the_logit_matrix() -> None:
    # longer side of the H x W grid: 1, 3, 9, 10, 15, 33 -> halvings down to one cell
    assert [max_level(c) for c in (1, 3, 67, 100, 200, 1000)] == [1, 2, 4, 4, 4, 6]
    assert max_level(100, "db2") == max_level(100)


def test_invalid_options_are_rejected() -> None:
    z = torch.zeros(2, 10)
    with pytest.raises(ValueError, match="distance"):
        figkd_hf_loss(z, z, distance="kl")
    with pytest.raises(ValueError, match="wavelet"):
        FiGKDLoss(wavelet="nope")
    with pytest.raises(ValueError, match="level"):
        logits_to_matrix(z, level=0)
    with pytest.raises(ValueError, match="T must be a finite number > 0, got -1.0"):
        FiGKDLoss(T=-1.0)
    with pytest.raises(ValueError, match="T must be"):
        FiGKDLoss(T=True)
    with pytest.raises(ValueError, match="one shape"):
        figkd_hf_loss(z, torch.zeros(2, 11))
    with pytest.raises(ValueError, match="bands must be one of"):
        FiGKDLoss(bands="mid")
    with pytest.raises(ValueError, match="mode must be one of"):
        figkd_hf_loss(z, z, mode="zero")


def test_level_is_checked_for_type_and_range_before_any_tensor_work(monkeypatch) -> None:
    def no_transform(*args, **kwargs):
        raise AssertionError("the transform ran before the level was checked")

    monkeypatch.setattr("raykd.losses.figkd.wavedec2", no_transform)
    z = torch.zeros(2, 100)
    with pytest.raises(ValueError, match=r"level must be an integer >= 1, got 1.5"):
        figkd_hf_loss(z, z, level=1.5)
    with pytest.raises(ValueError, match=r"level must be an integer >= 1, got 1.5"):
        FiGKDLoss(level=1.5)
    with pytest.raises(ValueError, match=r"level=50 is too deep for 100 classes: their 10 x 10 logit matrix allows "
                                         r"levels 1 to 4"):
        figkd_hf_loss(z, z, level=50)
    with pytest.raises(ValueError, match=r"level=50 is too deep for 200 classes.*levels 1 to 4"):
        FiGKDLoss(level=50, num_classes=200)
    with pytest.raises(ValueError, match=r"level=5 is too deep for 100 classes"):
        logits_to_matrix(z, level=5)


def test_per_sample_reduction_sums_each_samples_coefficients_by_hand() -> None:
    """16 logits: a 4 x 4 matrix, one Haar level, four 2 x 2 blocks. A teacher logit of 1 at (0, 0) puts +-1/2 in
    each detail band of block (0, 0); a logit of 2 at (1, 1) puts +-1 there. Per sample: the sum over the three
    bands' coefficients, then the batch mean; the default mean divides each band by its 4 coefficients."""
    s = torch.zeros(2, 16, dtype=torch.float64)
    t = torch.zeros(2, 16, dtype=torch.float64)
    t[0, 0], t[1, 5] = 1.0, 2.0
    assert figkd_hf_loss(s, t, reduction="sample").item() == pytest.approx((3 * 0.25 + 3 * 1.0) / 2)
    assert figkd_hf_loss(s, t, distance="l1", reduction="sample").item() == pytest.approx((3 * 0.5 + 3 * 1.0) / 2)
    assert figkd_hf_loss(s, t).item() == pytest.approx((0.25 / 4 + 1.0 / 4) / 2)  # mean over 2 x 4 x 3 terms
    assert FiGKDLoss(reduction="sample")(s, t).item() == pytest.approx(1.875)
    shifted = figkd_hf_loss(s + 3.0, t, reduction="sample")  # the detail bands ignore a constant shift
    assert shifted.item() == pytest.approx(1.875)
    with pytest.raises(ValueError, match="reduction must be one of"):
        figkd_hf_loss(s, t, reduction="sum")
