"""MTKD knowledge aggregator: shapes, the per-window DCT, parameter count, and the stage-1 training loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from raykd.models import create_model
from raykd.registry import MODELS
from raykd.models.aggregator import DCTSwinLayer, KnowledgeAggregator, dct_matrix, train_aggregator


def tiny(**kw) -> KnowledgeAggregator:
    torch.manual_seed(0)
    config = dict(num_teachers=3, scale=2, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4)
    return KnowledgeAggregator(**{**config, **kw})


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_aggregator_maps_teacher_outputs_to_one_hr_image_of_any_size(scale: int) -> None:
    torch.manual_seed(0)
    model = create_model("mtkd_aggregator", scale=scale).eval()
    # HR sides that are neither window * scale multiples nor even (11, 7 LR pixels; then a non-scale multiple)
    for h, w in ((11 * scale, 7 * scale), (8 * scale + 1, 5)):
        outputs = [torch.rand(1, 3, h, w) for _ in range(3)]
        with torch.no_grad():
            out = model(outputs)
            assert out.shape == (1, 3, h, w)
            assert torch.isfinite(out).all()
            # the list form is the same as teachers concatenated on channels, in the given order
            torch.testing.assert_close(model(torch.cat(outputs, dim=1)), out)
            assert not torch.allclose(model(outputs[::-1]), out)


def test_aggregator_rejects_wrong_teacher_counts_and_shapes() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="num_teachers=3"):
        model([torch.rand(1, 3, 8, 8)] * 2)
    with pytest.raises(ValueError, match="differ in shape"):
        model([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 10)])
    with pytest.raises(ValueError, match=r"\(B, 9, sH, sW\)"):
        model(torch.rand(1, 6, 8, 8))
    assert "mtkd_aggregator" in MODELS.names()


def test_dct_matrix_is_orthonormal_dct_ii() -> None:
    d = dct_matrix(8, dtype=torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64))
    # rows are the orthonormal DCT-II of the unit vectors
    torch.testing.assert_close(d.T, torch.from_numpy(scipy.fft.dct(np.eye(8), axis=0, norm="ortho")).T.contiguous())


def test_layer_dct_matches_scipy_dctn_per_window_and_inverts_exactly() -> None:
    ws, c = 4, 5
    layer = DCTSwinLayer(dim=c, num_heads=1, window_size=ws, shift_size=0, mlp_ratio=2.0, qkv_bias=True, drop=0.0,
                         attn_drop=0.0, drop_path=0.0)
    windows = torch.randn(6, ws, ws, c, generator=torch.Generator().manual_seed(0))
    coeffs = layer.dct2(windows.reshape(6, ws * ws, c))  # raster-ordered tokens, as window_partition gives
    expected = scipy.fft.dctn(windows.numpy(), axes=(1, 2), type=2, norm="ortho")
    np.testing.assert_allclose(coeffs.reshape(6, ws, ws, c).numpy(), expected, atol=1e-5)
    torch.testing.assert_close(layer.idct2(coeffs), windows.reshape(6, ws * ws, c))


def test_unshifted_layer_attends_within_its_window_only() -> None:
    """The DCT and attention stay inside each Ws x Ws window: a change in one window leaves the others as they
    were (a leak across windows would show in the outputs of neighbouring windows)."""
    ws, h, w, c = 4, 8, 8, 6
    torch.manual_seed(0)
    layer = DCTSwinLayer(c, 2, ws, 0, 2.0, True, 0.0, 0.0, 0.0).eval()
    x = torch.randn(1, h * w, c)
    y = x.clone().view(1, h, w, c)
    y[0, 1, 2] += 1.0  # a pixel in the top-left window
    with torch.no_grad():
        a = layer(x, (h, w), None).view(h, w, c)
        b = layer(y.view(1, h * w, c), (h, w), None).view(h, w, c)
    changed = (a - b).abs().amax(-1) > 1e-6
    assert changed[:ws, :ws].any()
    assert not changed[ws:].any() and not changed[:, ws:].any()


def _count(num_teachers: int, scale: int, dim: int, depths: tuple[int, ...], heads: int, ws: int, mlp_ratio: float,
           upsampler: str) -> int:
    """Parameters of the aggregator written out from its description (the paper gives no count)."""
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731 - 3x3 conv with bias
    linear = lambda cin, cout: cin * cout + cout  # noqa: E731
    hidden = int(dim * mlp_ratio)
    layer = (2 * dim + linear(dim, 3 * dim) + linear(dim, dim) + (2 * ws - 1) ** 2 * heads  # LN, qkv, proj, bias
             + 2 * dim + linear(dim, hidden) + linear(hidden, dim))  # LN, MLP
    total = conv(3 * num_teachers * scale * scale, dim) + 2 * dim  # conv_first + patch norm
    total += sum(depth * layer + conv(dim, dim) for depth in depths)  # DCTSwin blocks
    total += 2 * dim + conv(dim, dim)  # norm + conv_after_body
    if upsampler == "pixelshuffledirect":
        total += conv(dim, 3 * scale * scale)
    else:
        total += conv(dim, 64) + int(math.log2(scale)) * conv(64, 256) + conv(64, 3)
    return total


def test_parameter_count_of_paper_and_official_configs() -> None:
    model = create_model("mtkd_aggregator")
    n = sum(p.numel() for p in model.parameters())
    print(f"mtkd_aggregator (C=24, B=4, L=2, Ws=8, 3 teachers, x4): {n} parameters")
    assert n == _count(3, 4, 24, (2, 2, 2, 2), 6, 8, 2.0, "pixelshuffledirect")
    assert 0.10e6 < n < 0.13e6
    with torch.device("meta"):  # the official release config (embed 96, 2 blocks of 4), structure only
        official = create_model("mtkd_aggregator", embed_dim=96, depths=(4, 4), num_heads=(6, 6),
                                upsampler="pixelshuffle")
    assert sum(p.numel() for p in official.parameters()) == _count(3, 4, 96, (4, 4), 6, 8, 2.0, "pixelshuffle")


def test_mean_residual_adds_the_teacher_ensemble() -> None:
    model = tiny(mean_residual=True).eval()
    for p in model.upsample.parameters():
        torch.nn.init.zeros_(p)
    outputs = [torch.rand(2, 3, 10, 6) for _ in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(model(outputs), torch.stack(outputs).mean(0))


def _synthetic_batches(n: int = 4, seed: int = 0) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """Teachers that each see the truth through their own bias and noise."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        hr = torch.rand(2, 3, 16, 16, generator=g)
        teachers = [(hr + 0.05 * (k - 1) + 0.05 * torch.randn(hr.shape, generator=g)) for k in range(3)]
        batches.append((teachers, hr))
    return batches


def test_train_aggregator_reduces_l1_and_leaves_an_eval_model() -> None:
    model = tiny()
    batches = _synthetic_batches()
    seen: list[tuple[int, float]] = []
    result = train_aggregator(model, batches, epochs=6, lr=2e-3, device="cpu",
                              progress=lambda epoch, loss: seen.append((epoch, loss)))
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert result["epoch_losses"] == [loss for _, loss in seen]
    assert result["loss"] == result["epoch_losses"][-1]
    assert result["steps"] == 24 and result["samples"] == 48
    assert result["loss"] < 0.6 * result["epoch_losses"][0]
    assert not model.training
    with torch.no_grad():  # the reported loss is the L1 to the ground truth
        final = sum(torch.nn.functional.l1_loss(model(t), hr).item() for t, hr in batches) / len(batches)
    assert final < result["epoch_losses"][0]


def test_train_aggregator_rejects_a_one_shot_generator() -> None:
    gen = (b for b in _synthetic_batches(1))
    with pytest.raises(ValueError, match="re-iterable"):
        train_aggregator(tiny(), gen, epochs=2, lr=1e-3, device="cpu")
