"""raykd.losses.wavelet against PyWavelets, the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from raykd.losses.wavelet import MODES, wavedec, wavedec2, waverec, waverec2

WAVELETS = ("haar", "db2", "sym4", "bior2.2")
LEVELS = (1, 2, 3)
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The inputs here are tiny, so OpenMP hand-offs between threads dominate the run time, and on a busy
    CI machine multiply it several times over; one intra-op thread avoids them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _side(wavelet: str, level: int) -> int:
    """Smallest side that allows ``level`` (pywt.dwt_max_level), so every case is small but valid."""
    return (pywt.Wavelet(wavelet).dec_len - 1) * 2 ** level


def _shape2d(wavelet: str, level: int, parity: str) -> tuple[int, int]:
    base = _side(wavelet, level)
    return {"even": (base + 2, base + 6), "odd": (base + 5, base + 1), "mixed": (base + 1, base + 4)}[parity]


def _t(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _close(actual: torch.Tensor, expected: np.ndarray, tol: float = 1e-5) -> None:
    assert tuple(actual.shape) == expected.shape
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("parity", ["even", "odd", "mixed"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavedec2_waverec2_match_pywt(wavelet: str, mode: str, level: int, parity: str) -> None:
    x = RNG.standard_normal((2, 3, *_shape2d(wavelet, level, parity))).astype(np.float32)
    ref = pywt.wavedec2(x.astype(np.float64), wavelet, mode=mode, level=level)
    out = wavedec2(_t(x), wavelet, level=level, mode=mode)
    assert len(out) == level + 1
    _close(out[0], ref[0])
    for got, want in zip(out[1:], ref[1:]):
        assert len(got) == 3
        for g, w in zip(got, want):  # cH, cV, cD in pywt's order and orientation
            _close(g, w)

    coeffs = [_t(ref[0])] + [tuple(_t(c) for c in band) for band in ref[1:]]
    _close(waverec2(coeffs, wavelet, mode=mode), pywt.waverec2(ref, wavelet, mode=mode))


@pytest.mark.parametrize("odd", [False, True])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavedec_waverec_match_pywt(wavelet: str, mode: str, level: int, odd: bool) -> None:
    x = RNG.standard_normal((2, 3, _side(wavelet, level) + 3 + odd)).astype(np.float32)
    ref = pywt.wavedec(x.astype(np.float64), wavelet, mode=mode, level=level)
    out = wavedec(_t(x), wavelet, level=level, mode=mode)
    assert len(out) == level + 1
    for got, want in zip(out, ref):
        _close(got, want)
    _close(waverec([_t(c) for c in ref], wavelet, mode=mode), pywt.waverec(ref, wavelet, mode=mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wavelet", ["haar", "db3", "coif2", "rbio3.1", "db10"])
def test_perfect_reconstruction(wavelet: str, mode: str) -> None:
    side = _side(wavelet, 1) + 3  # odd sides: reconstruction is one sample longer, as in pywt
    x2 = torch.randn(2, side, side + 2, dtype=torch.float64)
    rec2 = waverec2(wavedec2(x2, wavelet, level=None, mode=mode), wavelet, mode=mode)
    assert rec2.shape[-2:] == pywt.waverec2(pywt.wavedec2(x2.numpy(), wavelet, mode, None), wavelet, mode).shape[-2:]
    torch.testing.assert_close(rec2[..., :side, :side + 2], x2, rtol=1e-9, atol=1e-9)

    x1 = torch.randn(3, side, dtype=torch.float64)
    rec1 = waverec(wavedec(x1, wavelet, level=None, mode=mode), wavelet, mode=mode)
    torch.testing.assert_close(rec1[..., :side], x1, rtol=1e-9, atol=1e-9)


def test_no_batch_dims_and_wavelet_object() -> None:
    custom = pywt.Wavelet("my_db3", filter_bank=pywt.Wavelet("db3").filter_bank)
    x = RNG.standard_normal((23, 21))
    for got, want in zip(wavedec2(_t(x, torch.float64), custom, 2, "symmetric"),
                         pywt.wavedec2(x, custom, "symmetric", 2)):
        if isinstance(want, tuple):
            for g, w in zip(got, want):
                _close(g, w, 1e-12)
        else:
            _close(got, want, 1e-12)
    s = RNG.standard_normal(29)
    for got, want in zip(wavedec(_t(s, torch.float64), pywt.Wavelet("sym3"), None, "zero"),
                         pywt.wavedec(s, "sym3", "zero", None)):
        _close(got, want, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_keeps_dtype(dtype: torch.dtype) -> None:
    x = RNG.standard_normal((2, 16, 20)).astype(np.float32)
    out = wavedec2(_t(x, dtype), "db2", 2, "symmetric")
    ref = pywt.wavedec2(x, "db2", "symmetric", 2)
    assert out[0].dtype == dtype and out[1][0].dtype == dtype
    _close(out[1][2], ref[1][2], 0.1)
    assert waverec2(out, "db2", "symmetric").dtype == dtype


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode: str) -> None:
    x = torch.randn(2, 13, 12, dtype=torch.float64, requires_grad=True)

    def dec(inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        coeffs = wavedec2(inp, "db2", level=2, mode=mode)
        return (coeffs[0],) + coeffs[1] + coeffs[2]

    assert torch.autograd.gradcheck(dec, (x,), fast_mode=True)

    shapes = [tuple(c.shape) for c in dec(x.detach())]
    flat = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]

    def rec(*cs: torch.Tensor) -> torch.Tensor:
        return waverec2([cs[0], cs[1:4], cs[4:7]], "db2", mode=mode)

    assert torch.autograd.gradcheck(rec, tuple(flat), fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_pywt(mode: str) -> None:
    x = RNG.standard_normal((4, 3, 33, 40)).astype(np.float32)
    out = wavedec2(_t(x).cuda(), "sym4", 2, mode)
    ref = pywt.wavedec2(x.astype(np.float64), "sym4", mode, 2)
    _close(out[0].cpu(), ref[0])
    for g, w in zip(out[1], ref[1]):
        _close(g.cpu(), w)
    _close(waverec2(out, "sym4", mode).cpu()[..., :33, :40], x.astype(np.float64))


def test_too_small_input_names_shape_level_wavelet_and_max() -> None:
    x = torch.zeros(2, 3, 13, 40)
    with pytest.raises(ValueError, match=r"level 3 .*\(2, 3, 13, 40\).*'db2'.*largest allowed level is 2"):
        wavedec2(x, "db2", level=3)
    with pytest.raises(ValueError, match=r"largest allowed level is 0"):
        wavedec(torch.zeros(5), "sym4")
    with pytest.raises(ValueError, match=r"level 0 .*must be >= 1"):
        wavedec2(x, "haar", level=0)
    with pytest.raises(ValueError, match=r"shape \(..., H, W\)"):
        wavedec2(torch.zeros(8), "haar")


def test_bad_mode_lists_supported_modes() -> None:
    for fn, arg in [(wavedec2, torch.zeros(8, 8)), (wavedec, torch.zeros(8))]:
        with pytest.raises(ValueError, match=r"'reflect'.*'periodization', 'symmetric', 'zero'"):
            fn(arg, "haar", 1, "reflect")
    with pytest.raises(ValueError, match="supported"):
        waverec2(wavedec2(torch.zeros(8, 8)), "haar", mode="periodic")


def test_unknown_wavelet_and_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"unknown discrete wavelet 'db99'.*pywt.wavelist"):
        wavedec2(torch.zeros(8, 8), "db99")
    with pytest.raises(ValueError, match=r"unknown discrete wavelet 'morl'"):
        wavedec(torch.zeros(8), "morl")  # continuous wavelets have no filter bank
    with pytest.raises(TypeError, match="floating-point"):
        wavedec2(torch.zeros(8, 8, dtype=torch.int64))
    coeffs = wavedec2(torch.zeros(2, 16, 16), "haar", level=2)
    coeffs[1] = (coeffs[1][0][..., :3], coeffs[1][1], coeffs[1][2])
    with pytest.raises(ValueError, match=r"coeffs\[1\] must be three same-shaped"):
        waverec2(coeffs, "haar")
    with pytest.raises(ValueError, match=r"shape mismatch at coeffs\[1\]"):
        waverec([torch.zeros(2, 5), torch.zeros(2, 9)], "haar")
