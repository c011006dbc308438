from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from raykd.losses.features import HintRegressor, at_loss, attention_map, dfd_loss, hint_loss


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(4, 16), (3, 8, 2, 2)])
def test_dfd_loss_is_half_squared_l2_summed_over_features_mean_over_batch(shape: tuple[int, ...]) -> None:
    s, t = _randn(*shape, seed=1), _randn(*shape, seed=2)
    d = (s.numpy() - t.numpy()).reshape(shape[0], -1)
    ref = np.mean([0.5 * np.sum(row**2) for row in d])
    assert dfd_loss(s, t).item() == pytest.approx(ref, rel=1e-12)


def test_dfd_loss_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dfd_loss(torch.zeros(2, 8), torch.zeros(2, 16))


def test_hint_loss_equal_sizes_is_mse() -> None:
    s, t = _randn(2, 3, 4, 4, seed=3), _randn(2, 3, 4, 4, seed=4)
    assert hint_loss(s, t).item() == pytest.approx(np.mean((s.numpy() - t.numpy()) ** 2), rel=1e-12)


@pytest.mark.parametrize("student_larger", [True, False])
def test_hint_loss_pools_the_larger_map_to_the_smaller(student_larger: bool) -> None:
    big, small = _randn(2, 3, 8, 8, seed=5), _randn(2, 3, 4, 4, seed=6)
    pooled = big.numpy().reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5))
    ref = np.mean((pooled - small.numpy()) ** 2)
    s, t = (big, small) if student_larger else (small, big)
    assert hint_loss(s, t).item() == pytest.approx(ref, rel=1e-12)


def test_hint_regressor_maps_student_width_to_teacher_width() -> None:
    conv = HintRegressor((8, 4, 4), (16, 8, 8))
    assert isinstance(conv.proj[0], nn.Conv2d) and conv.proj[0].weight.shape == (16, 8, 1, 1)
    assert isinstance(conv.proj[1], nn.BatchNorm2d)
    assert conv(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    flat = HintRegressor((8,), (32,))
    assert flat(torch.randn(2, 8)).shape == (2, 32)
    tokens = HintRegressor((5, 8), (5, 12))
    assert tokens(torch.randn(2, 5, 8)).shape == (2, 5, 12)
    with pytest.raises(ValueError, match="same rank"):
        HintRegressor((8, 4, 4), (16,))


def _at_ref(s: np.ndarray, t: np.ndarray, p: float) -> float:
    def q(f: np.ndarray) -> np.ndarray:
        a = (np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return float(np.mean((q(s) - q(t)) ** 2))


@pytest.mark.parametrize("p", [2.0, 1.0, 4.0])
def test_at_loss_matches_zagoruyko_formula(p: float) -> None:
    s, t = _randn(3, 4, 5, 6, seed=7), _randn(3, 9, 5, 6, seed=8)  # channel counts may differ
    assert at_loss(s, t, p=p).item() == pytest.approx(_at_ref(s.numpy(), t.numpy(), p), rel=1e-10)
    np.testing.assert_allclose(attention_map(s, p).numpy(), (np.abs(s.numpy()) ** p).mean(axis=1))


def test_at_loss_resizes_student_map_to_teacher_size() -> None:
    s = torch.ones(2, 4, 4, 4, dtype=torch.float64)
    t = torch.full((2, 8, 8, 8), 3.0, dtype=torch.float64)
    assert at_loss(s, t).item() == pytest.approx(0.0, abs=1e-15)  # flat maps agree once normalised
    assert at_loss(_randn(2, 4, 4, 4, seed=9), _randn(2, 8, 8, 8, seed=10)).item() > 0
    with pytest.raises(ValueError, match="batch, channels, H, W"):
        at_loss(torch.zeros(2, 8), torch.zeros(2, 8))


def test_gradients_reach_the_student_only() -> None:
    s = _randn(2, 4, 4, 4, seed=11).requires_grad_(True)
    t = _randn(2, 4, 4, 4, seed=12).requires_grad_(True)
    (dfd_loss(s, t) + hint_loss(s, t) + at_loss(s, t)).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
