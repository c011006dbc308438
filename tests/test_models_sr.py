"""SR model zoo: shapes, published parameter counts, official state-dict layouts and checkpoint loading.

The expected key layouts below are written out from the reference implementations (EDSR-PyTorch, RCAN,
SwinIR's network_swinir.py), independently of raykd's modules.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from raykd.models import create_model
from raykd.registry import MODELS
from raykd.models.sr_common import load_official
from raykd.models.swinir import WindowAttention, relative_position_index, shifted_window_mask

SR_MODELS = ("edsr", "edsr_baseline", "rcan", "rcan_light", "swinir", "swinir_light", "srresnet")
SMALL_MODELS = ("edsr_baseline", "rcan_light", "swinir_light", "srresnet")
DIV2K_MEAN = torch.tensor([0.4488, 0.4371, 0.4040])


def build(name: str, scale: int = 4, seed: int = 0, meta: bool = False, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    if meta:  # structure only: the full-size models build instantly without allocating weights
        with torch.device("meta"):
            return create_model(name, scale=scale, **kw)
    return create_model(name, scale=scale, **kw).eval()


def weights_differ(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Guard against a vacuous round trip: the model about to be loaded must start from other weights."""
    name, weight = next(iter(a.named_parameters()))
    return not torch.equal(weight, b.get_parameter(name))


# ---- official layouts, written from the reference code ------------------------------------------------------


def _conv(keys: dict, name: str, cin: int, cout: int, k: int = 3) -> None:
    keys[f"{name}.weight"] = (cout, cin, k, k)
    keys[f"{name}.bias"] = (cout,)


def _upsampler(keys: dict, prefix: str, scale: int, feats: int) -> None:
    if scale == 3:
        _conv(keys, f"{prefix}.0", feats, 9 * feats)
    else:
        for j in range(int(math.log2(scale))):
            _conv(keys, f"{prefix}.{2 * j}", feats, 4 * feats)


def _mean_shifts(keys: dict) -> None:
    for name in ("sub_mean", "add_mean"):
        keys[f"{name}.weight"] = (3, 3, 1, 1)
        keys[f"{name}.bias"] = (3,)


def edsr_official_keys(scale: int, n_resblocks: int, n_feats: int) -> dict[str, tuple]:
    keys: dict[str, tuple] = {}
    _mean_shifts(keys)
    _conv(keys, "head.0", 3, n_feats)
    for i in range(n_resblocks):
        _conv(keys, f"body.{i}.body.0", n_feats, n_feats)
        _conv(keys, f"body.{i}.body.2", n_feats, n_feats)
    _conv(keys, f"body.{n_resblocks}", n_feats, n_feats)
    _upsampler(keys, "tail.0", scale, n_feats)
    _conv(keys, "tail.1", n_feats, 3)
    return keys


def rcan_official_keys(scale: int, n_resgroups: int, n_resblocks: int, n_feats: int = 64, reduction: int = 16):
    keys: dict[str, tuple] = {}
    _mean_shifts(keys)
    _conv(keys, "head.0", 3, n_feats)
    for g in range(n_resgroups):
        for b in range(n_resblocks):
            p = f"body.{g}.body.{b}.body"
            _conv(keys, f"{p}.0", n_feats, n_feats)
            _conv(keys, f"{p}.2", n_feats, n_feats)
            _conv(keys, f"{p}.3.conv_du.0", n_feats, n_feats // reduction, k=1)
            _conv(keys, f"{p}.3.conv_du.2", n_feats // reduction, n_feats, k=1)
        _conv(keys, f"body.{g}.body.{n_resblocks}", n_feats, n_feats)
    _conv(keys, f"body.{n_resgroups}", n_feats, n_feats)
    _upsampler(keys, "tail.0", scale, n_feats)
    _conv(keys, "tail.1", n_feats, 3)
    return keys


def swinir_official_keys(scale, embed, depths, heads, upsampler, img_size=64, window=8, mlp_ratio=2):
    n = window * window
    hidden = int(embed * mlp_ratio)
    keys: dict[str, tuple] = {}
    _conv(keys, "conv_first", 3, embed)
    keys["patch_embed.norm.weight"] = keys["patch_embed.norm.bias"] = (embed,)
    for i, (depth, nh) in enumerate(zip(depths, heads)):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}"
            for norm in ("norm1", "norm2"):
                keys[f"{p}.{norm}.weight"] = keys[f"{p}.{norm}.bias"] = (embed,)
            keys[f"{p}.attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, nh)
            keys[f"{p}.attn.relative_position_index"] = (n, n)
            keys[f"{p}.attn.qkv.weight"], keys[f"{p}.attn.qkv.bias"] = (3 * embed, embed), (3 * embed,)
            keys[f"{p}.attn.proj.weight"], keys[f"{p}.attn.proj.bias"] = (embed, embed), (embed,)
            keys[f"{p}.mlp.fc1.weight"], keys[f"{p}.mlp.fc1.bias"] = (hidden, embed), (hidden,)
            keys[f"{p}.mlp.fc2.weight"], keys[f"{p}.mlp.fc2.bias"] = (embed, hidden), (embed,)
            if j % 2 == 1:  # shifted-window layers store the mask for the training patch
                keys[f"{p}.attn_mask"] = ((img_size // window) ** 2, n, n)
        _conv(keys, f"layers.{i}.conv", embed, embed)
    keys["norm.weight"] = keys["norm.bias"] = (embed,)
    _conv(keys, "conv_after_body", embed, embed)
    if upsampler == "pixelshuffle":
        _conv(keys, "conv_before_upsample.0", embed, 64)
        _upsampler(keys, "upsample", scale, 64)
        _conv(keys, "conv_last", 64, 3)
    else:
        _conv(keys, "upsample.0", embed, 3 * scale * scale)
    return keys


def official_keys(name: str, scale: int) -> dict[str, tuple]:
    return {
        "edsr": lambda: edsr_official_keys(scale, 32, 256),
        "edsr_baseline": lambda: edsr_official_keys(scale, 16, 64),
        "rcan": lambda: rcan_official_keys(scale, 10, 20),
        "rcan_light": lambda: rcan_official_keys(scale, 10, 6),
        "swinir": lambda: swinir_official_keys(scale, 180, (6,) * 6, (6,) * 6, "pixelshuffle"),
        "swinir_light": lambda: swinir_official_keys(scale, 60, (6,) * 4, (6,) * 4, "pixelshuffledirect"),
    }[name]()


# ---- tests ---------------------------------------------------------------------------------------------------


def test_all_sr_models_registered():
    assert set(SR_MODELS) <= set(MODELS.names())


@pytest.mark.parametrize("name", SR_MODELS)
def test_unsupported_scale_is_rejected(name):
    with pytest.raises(ValueError, match=rf"{name}: scale=8 .*\(2, 3, 4\)"):
        create_model(name, scale=8)


@pytest.mark.parametrize(
    "name, published",
    [("edsr", 43.1e6), ("edsr_baseline", 1.52e6), ("rcan", 15.6e6), ("rcan_light", 5.2e6),
     ("swinir", 11.9e6), ("swinir_light", 0.93e6)],
)
def test_parameter_count_matches_publication(name, published):
    n = sum(p.numel() for p in build(name, meta=True).parameters())
    assert abs(n - published) / published < 0.02, f"{name} x4 has {n} parameters, published {published:.3g}"


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["edsr", "edsr_baseline", "rcan", "rcan_light", "swinir", "swinir_light"])
def test_state_dict_has_official_layout(name, scale):
    got = {k: tuple(v.shape) for k, v in build(name, scale, meta=True).state_dict().items()}
    want = official_keys(name, scale)
    assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


@pytest.mark.parametrize(
    "name, key, shape",
    [
        ("edsr_baseline", "head.0.weight", (64, 3, 3, 3)),
        ("edsr_baseline", "body.16.weight", (64, 64, 3, 3)),
        ("edsr", "body.31.body.2.weight", (256, 256, 3, 3)),
        ("edsr", "tail.0.2.weight", (1024, 256, 3, 3)),
        ("rcan", "body.9.body.19.body.3.conv_du.0.weight", (4, 64, 1, 1)),
        ("rcan", "body.10.bias", (64,)),
        ("swinir", "layers.0.residual_group.blocks.0.attn.relative_position_bias_table", (225, 6)),
        ("swinir", "layers.5.residual_group.blocks.5.attn_mask", (64, 64, 64)),
        ("swinir", "layers.0.residual_group.blocks.0.mlp.fc1.weight", (360, 180)),
        ("swinir", "upsample.2.weight", (256, 64, 3, 3)),
        ("swinir_light", "upsample.0.weight", (48, 60, 3, 3)),
        ("swinir_light", "layers.3.residual_group.blocks.0.attn.relative_position_index", (64, 64)),
    ],
)
def test_official_key_spot_checks(name, key, shape):
    assert tuple(build(name, 4, meta=True).state_dict()[key].shape) == shape


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_output_is_scale_times_input(name, scale):
    x = torch.rand(1, 3, 12, 10)  # not a multiple of SwinIR's window of 8
    with torch.no_grad():
        assert build(name, scale)(x).shape == (1, 3, 12 * scale, 10 * scale)


# Depth does not change how a checkpoint loads, so the file round trips use shallow configs (their full-size
# layouts are checked above and the full-size models load in test_full_models_round_trip below).
SHALLOW = {
    "edsr_baseline": {"n_resblocks": 2},
    "rcan_light": {"n_resgroups": 2, "n_resblocks": 2},
    "swinir_light": {"depths": (2, 2), "num_heads": (6, 6)},
    "srresnet": {"n_blocks": 2},
}


@pytest.mark.parametrize(
    "name, scale, wrap, suffix",
    [
        ("edsr_baseline", 4, None, ".pt"),
        ("rcan_light", 2, None, ".pt"),
        ("swinir_light", 3, "params", ".pth"),
        ("swinir_light", 4, "params_ema", ".pth"),
        ("srresnet", 4, None, ".pth"),
        ("edsr_baseline", 3, None, ".safetensors"),
    ],
)
def test_checkpoint_round_trip_through_official_wrapping(tmp_path, name, scale, wrap, suffix):
    source = build(name, scale, seed=1, **SHALLOW[name])
    if name == "srresnet":  # give BatchNorm non-trivial running statistics to carry over
        source.train()(torch.rand(2, 3, 8, 8))
        source.eval()
    state = source.state_dict()
    path = tmp_path / f"official{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state if wrap is None else {wrap: state}, path)

    fresh = build(name, scale, seed=2, **SHALLOW[name])
    assert weights_differ(fresh, source)
    assert load_official(fresh, path) is fresh
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


@pytest.mark.parametrize("name", ["edsr", "rcan", "swinir"])
def test_full_models_round_trip(name):
    """Full-size teachers at x3 on a tiny input: the official layout loads strictly and the output is 3x."""
    source, fresh = build(name, 3, seed=1), build(name, 3, seed=2)
    assert weights_differ(fresh, source)
    load_official(fresh, source.state_dict())
    x = torch.rand(1, 3, 4, 5)
    with torch.no_grad():
        out = fresh(x)
        assert out.shape == (1, 3, 12, 15)
        assert torch.equal(out, source(x))


def test_load_official_prefers_params_ema_and_honours_param_key():
    a, b = build("edsr_baseline", 2, seed=1), build("edsr_baseline", 2, seed=2)
    target = build("edsr_baseline", 2, seed=3)
    wrapped = {"params": a.state_dict(), "params_ema": b.state_dict()}
    load_official(target, wrapped)
    assert torch.equal(target.head[0].weight, b.head[0].weight)
    load_official(target, wrapped, param_key="params")
    assert torch.equal(target.head[0].weight, a.head[0].weight)


def test_load_official_lists_every_bad_key_and_leaves_model_untouched():
    model = build("edsr_baseline", 4, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = build("edsr_baseline", 4, seed=2).state_dict()
    del state["body.3.body.0.bias"]
    state["body.99.weight"] = torch.zeros(1)
    state["head.0.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        load_official(model, state)
    message = str(err.value)
    assert "missing" in message and "body.3.body.0.bias" in message
    assert "unexpected" in message and "body.99.weight" in message
    assert "head.0.weight: checkpoint (64, 3, 5, 5) vs model (64, 3, 3, 3)" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_official_names_the_img_size_of_a_swinir_checkpoint():
    # DIV2K-trained classical SwinIR files (s48w8) store masks for 48x48 patches: 36 windows.
    model = build("swinir_light", 2, meta=True)
    state = build("swinir_light", 2, meta=True, img_size=48).state_dict()
    with pytest.raises(ValueError, match="img_size=48"):
        load_official(model, state)


@pytest.mark.parametrize("name, last", [("edsr_baseline", "tail.1"), ("rcan_light", "tail.1"),
                                        ("swinir_light", "upsample.0")])
def test_io_range_is_zero_one_with_mean_restored(name, last):
    """A zeroed last conv leaves only the added-back DIV2K mean: the output is that mean in [0, 1] units, so
    the [0, 255] reference convention is converted on both sides."""
    model = build(name, 2, **SHALLOW[name])
    conv = model.get_submodule(last)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 6, 7))
    torch.testing.assert_close(out, DIV2K_MEAN.view(1, 3, 1, 1).expand_as(out), atol=1e-6, rtol=0)


def test_edsr_mean_shift_holds_reference_constants():
    state = build("edsr_baseline", 2).state_dict()
    torch.testing.assert_close(state["sub_mean.bias"], -255 * DIV2K_MEAN)
    torch.testing.assert_close(state["add_mean.bias"], 255 * DIV2K_MEAN)
    torch.testing.assert_close(state["sub_mean.weight"], torch.eye(3).view(3, 3, 1, 1))


def test_swinir_pads_like_the_official_test_script():
    """main_test_swinir.py mirror-pads with flip-and-concatenate, runs the model, and crops; doing the same by
    hand on a window-multiple input must give what the model does internally on the raw input."""
    model = build("swinir_light", 2, depths=(2, 2), num_heads=(6, 6))
    x = torch.rand(1, 3, 12, 10)
    padded = torch.cat([x, x.flip(2)], 2)[:, :, :16]
    padded = torch.cat([padded, padded.flip(3)], 3)[..., :16]
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :24, :20])


def test_swinir_input_smaller_than_a_window():
    model = build("swinir_light", 4, depths=(2,), num_heads=(6,))
    with torch.no_grad():
        assert model(torch.rand(2, 3, 3, 5)).shape == (2, 3, 12, 20)


def test_swinir_masks_for_other_sizes_match_stored_ones():
    """A model built for 16x16 patches uses its stored masks on a 16x16 input; one built for 24x24 computes them
    for 16x16 on the fly: same weights, same output."""
    stored = build("swinir_light", 2, img_size=16, depths=(2,), num_heads=(6,))
    computed = build("swinir_light", 2, img_size=24, depths=(2,), num_heads=(6,))
    weights = {k: v for k, v in stored.state_dict().items() if not k.endswith("attn_mask")}
    computed.load_state_dict(weights, strict=False)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(computed(x), stored(x))


def test_shifted_window_mask_follows_the_reference_region_labels():
    h, w, ws, shift = 8, 16, 4, 2
    labels = torch.zeros(h, w)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):  # the reference's three bands per axis
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            labels[hs, wsl] = cnt
            cnt += 1
    windows = labels.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    want = torch.where(windows[:, None, :] == windows[:, :, None], 0.0, -100.0)
    torch.testing.assert_close(shifted_window_mask(h, w, ws, shift), want)


def test_relative_position_index_matches_its_definition():
    m = 3
    idx = relative_position_index(m)
    for i in range(m * m):
        for j in range(m * m):
            dy, dx = i // m - j // m, i % m - j % m
            assert idx[i, j] == (dy + m - 1) * (2 * m - 1) + (dx + m - 1)


def test_window_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    dim, heads, ws = 12, 3, 4
    attn = WindowAttention(dim, ws, heads).eval()
    n = ws * ws
    x = torch.randn(2 * 2, n, dim)  # 2 images x 2 windows
    mask = torch.where(torch.rand(2, n, n) < 0.3, -100.0, 0.0)
    with torch.no_grad():
        got = attn(x, mask)
        q, k, v = attn.qkv(x).view(4, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        bias = attn.relative_position_bias_table[relative_position_index(ws).view(-1)].view(n, n, heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dim // heads) + bias.permute(2, 0, 1)
        scores = scores + mask.repeat(2, 1, 1).unsqueeze(1)  # window w of every image gets mask[w]
        want = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(4, n, dim))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
