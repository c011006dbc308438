"""MTKD knowledge aggregator: shapes, the per-window DCT, parameter count, and the aggregated teacher model.

(Stage 1 trains the aggregator through the one training loop, raykd.train.loop; tests/test_mtkd_pipeline.py
covers it.)
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from raykd.models import create_model
from raykd.registry import MODELS
from raykd.models.aggregator import DCTSwinLayer, KnowledgeAggregator, MTKDTeacher, dct_matrix, mtkd_teacher
from raykd.models.features import capture


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


TEACHERS = [{"name": "a", "model": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8}},
            {"name": "b", "model": "bicubic"},
            {"name": "c", "model": "edsr_baseline", "model_kwargs": {"n_resblocks": 2, "n_feats": 4}}]
SMALL_AGGREGATOR = dict(embed_dim=8, depths=(1,), num_heads=(2,), window_size=4)


def test_mtkd_teacher_is_the_aggregator_of_its_teachers_outputs_in_order() -> None:
    torch.manual_seed(0)
    teacher = create_model("mtkd_teacher", teachers=TEACHERS, aggregator_kwargs=SMALL_AGGREGATOR, scale=2).eval()
    assert isinstance(teacher, MTKDTeacher) and teacher.scale == 2
    assert [type(t).__name__ for t in teacher.teachers] == [type(create_model(e["model"], scale=2)).__name__
                                                            for e in TEACHERS]
    assert teacher.aggregator.num_teachers == 3
    lr = torch.rand(2, 3, 6, 5)
    with torch.no_grad():
        out = teacher(lr)
        expected = teacher.aggregator([t(lr) for t in teacher.teachers])
        swapped = teacher.aggregator([t(lr) for t in reversed(teacher.teachers)])
    assert out.shape == (2, 3, 12, 10)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, swapped)  # the channel order is the teachers' order
    # one state dict: every parameter under teachers.<i>. or aggregator.
    keys = list(teacher.state_dict())
    assert all(k.startswith(("teachers.0.", "teachers.1.", "teachers.2.", "aggregator.")) for k in keys)
    assert any(k.startswith("teachers.2.") for k in keys) and any(k.startswith("aggregator.") for k in keys)
    # an SR teacher like any other: capture names its output "image"
    with torch.no_grad():
        torch.testing.assert_close(capture(teacher, lr, [], output="image")["image"], out)


def test_mtkd_teacher_state_dict_round_trips_into_a_fresh_build() -> None:
    torch.manual_seed(0)
    a = mtkd_teacher(TEACHERS, SMALL_AGGREGATOR, scale=2).eval()
    torch.manual_seed(1)
    b = mtkd_teacher(TEACHERS, SMALL_AGGREGATOR, scale=2).eval()
    lr = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(a(lr), b(lr))
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(lr), b(lr), rtol=0, atol=0)


def test_mtkd_teacher_rejects_bad_teacher_lists() -> None:
    with pytest.raises(ValueError, match="teachers is empty"):
        mtkd_teacher([])
    with pytest.raises(ValueError, match=r"teachers\[1\].*unknown keys: \['weights'\]"):
        mtkd_teacher([TEACHERS[0], {"model": "bicubic", "weights": "x.pth"}], SMALL_AGGREGATOR, scale=2)
    with pytest.raises(ValueError, match=r"teachers\[0\].*must have 'model'"):
        mtkd_teacher([{"name": "a"}], SMALL_AGGREGATOR, scale=2)
    with pytest.raises(ValueError, match=r"teachers\[0\] \(bicubic\) has scale=3 but the aggregated teacher is x2"):
        mtkd_teacher([{"model": "bicubic", "model_kwargs": {"scale": 3}}], SMALL_AGGREGATOR, scale=2)
    with pytest.raises(ValueError, match="2 teachers but the aggregator was built for num_teachers=3"):
        MTKDTeacher([create_model("bicubic", scale=2)] * 2, tiny())
