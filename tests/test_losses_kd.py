from __future__ import annotations

import numpy as np
import pytest
import torch

from raykd.losses.kd import MLKD_TEMPERATURES, dkd_loss, dkd_terms, kd_loss, mlkd_kept_fractions, mlkd_terms


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _logits(b: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


def _kd_ref(s: np.ndarray, t: np.ndarray, T: float) -> float:
    return T**2 * np.mean([_kl(_softmax(t[i] / T), _softmax(s[i] / T)) for i in range(len(s))])


def _dkd_ref(s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float) -> tuple[float, float]:
    tckd, nckd = [], []
    for i in range(len(s)):
        ps, pt = _softmax(s[i] / T), _softmax(t[i] / T)
        bs = np.array([ps[y[i]], 1 - ps[y[i]]])
        bt = np.array([pt[y[i]], 1 - pt[y[i]]])
        tckd.append(_kl(bt, bs))
        keep = np.arange(s.shape[1]) != y[i]
        nckd.append(_kl(_softmax(t[i][keep] / T), _softmax(s[i][keep] / T)))
    return T**2 * float(np.mean(tckd)), T**2 * float(np.mean(nckd))


@pytest.mark.parametrize("T", [1.0, 4.0, 0.5])
@pytest.mark.parametrize("c", [2, 10, 37])
def test_kd_loss_matches_hinton_formula(T: float, c: int) -> None:
    s, t, _ = _logits(5, c, seed=c)
    got = kd_loss(s, t, T=T)
    assert got.item() == pytest.approx(_kd_ref(s.numpy(), t.numpy(), T), rel=1e-10)


def test_kd_loss_is_zero_for_identical_logits_and_nonnegative() -> None:
    s, t, _ = _logits(4, 7, seed=0)
    assert kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(s, t).item() > 0


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("c", [2, 3, 100])
def test_dkd_terms_match_paper_definitions(T: float, c: int) -> None:
    s, t, y = _logits(6, c, seed=10 + c)
    tckd, nckd = dkd_terms(s, t, y, T=T)
    ref_t, ref_n = _dkd_ref(s.numpy(), t.numpy(), y.numpy(), T)
    assert tckd.item() == pytest.approx(ref_t, rel=1e-9, abs=1e-12)
    assert nckd.item() == pytest.approx(ref_n, rel=1e-9, abs=1e-12)
    total = dkd_loss(s, t, y, alpha=0.7, beta=3.0, T=T)
    assert total.item() == pytest.approx(0.7 * ref_t + 3.0 * ref_n, rel=1e-9, abs=1e-12)


def test_dkd_reformulates_kd_per_sample() -> None:
    """Zhao et al. eq. 6: KD = TCKD + (1 - p_t^T) * NCKD for each sample."""
    s, t, y = _logits(4, 12, seed=3)
    T = 2.0
    for i in range(4):
        tckd, nckd = dkd_terms(s[i : i + 1], t[i : i + 1], y[i : i + 1], T=T)
        p_target = torch.softmax(t[i] / T, dim=0)[y[i]]
        assert kd_loss(s[i : i + 1], t[i : i + 1], T=T).item() == pytest.approx(
            (tckd + (1 - p_target) * nckd).item(), rel=1e-9
        )


def test_gradients_reach_the_student_only() -> None:
    s, t, y = _logits(3, 9, seed=5)
    s.requires_grad_(True)
    t.requires_grad_(True)
    (kd_loss(s, t) + dkd_loss(s, t, y)).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_mismatched_shapes_and_bad_temperature_are_rejected() -> None:
    s, t, y = _logits(3, 9, seed=6)
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(s, t[:, :5])
    with pytest.raises(ValueError, match="T must be > 0"):
        kd_loss(s, t, T=0.0)
    with pytest.raises(ValueError, match="target"):
        dkd_loss(s, t, y[:2])


def _mlkd_ref(s: np.ndarray, t: np.ndarray, temperatures: tuple[float, ...]) -> tuple[float, float, float]:
    """MLKD's eq. 4-8 element by element: instance KL, batch Gram (B x B) and class correlation (C x C)."""
    b, c = s.shape
    instance = batch = klass = 0.0
    for T in temperatures:
        ps = np.array([_softmax(s[i] / T) for i in range(b)])
        pt = np.array([_softmax(t[i] / T) for i in range(b)])
        instance += T**2 * sum(_kl(pt[i], ps[i]) for i in range(b)) / b
        for i in range(b):
            for j in range(b):
                batch += (sum(pt[i, k] * pt[j, k] for k in range(c)) - sum(ps[i, k] * ps[j, k] for k in range(c))
                          ) ** 2 / b
        for k in range(c):
            for m in range(c):
                klass += (sum(pt[i, k] * pt[i, m] for i in range(b)) - sum(ps[i, k] * ps[i, m] for i in range(b))
                          ) ** 2 / c
    return instance, batch, klass


@pytest.mark.parametrize("b, c", [(5, 7), (3, 10)])
def test_mlkd_terms_match_the_papers_equations(b: int, c: int) -> None:
    s, t, _ = _logits(b, c, seed=b * c)
    got = mlkd_terms(s, t)
    want = _mlkd_ref(s.numpy(), t.numpy(), MLKD_TEMPERATURES)
    for g, w in zip(got, want):
        assert g.item() == pytest.approx(w, rel=1e-10)
    assert MLKD_TEMPERATURES == (2.0, 3.0, 4.0, 5.0, 6.0)  # the released code's temperatures
    assert all(v.item() == pytest.approx(0.0, abs=1e-12) for v in mlkd_terms(t, t))
    with pytest.raises(ValueError, match="temperature"):
        mlkd_terms(s, t, ())


def test_mlkd_masks_keep_the_less_confident_half_as_the_released_code_counts_it() -> None:
    """The released code's masks: samples whose top teacher probability is at most the batch median (numpy's
    interpolated 50th percentile), classes whose summed probability is at most theirs; an odd batch keeps the median
    sample too, and ties at the median are all kept."""
    for b, c in ((8, 10), (7, 5)):
        _, t, _ = _logits(b, c, seed=b + c)
        pt = np.array([_softmax(row) for row in t.numpy()])
        confidence, per_class = pt.max(axis=1), pt.sum(axis=0)
        want = ((confidence <= np.percentile(confidence, 50)).mean(), (per_class <= np.percentile(per_class, 50)).mean())
        got = mlkd_kept_fractions(t)
        assert [g.item() for g in got] == pytest.approx(want, abs=1e-6)
    assert [g.item() for g in mlkd_kept_fractions(torch.randn(8, 10))] == [0.5, 0.5]
    assert [g.item() for g in mlkd_kept_fractions(torch.randn(7, 5))] == pytest.approx([4 / 7, 3 / 5])
    assert [g.item() for g in mlkd_kept_fractions(torch.zeros(6, 4))] == [1.0, 1.0]  # all tied at the median
