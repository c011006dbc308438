"""Weights from files (raykd/models/weights.py): reading, key maps for official layouts, strict loading.

The official layouts are written out by hand from the reference code (hustvl/Vim ``vim/models_mamba.py`` with
mamba_ssm's bimamba-v2 mixer; BasicSR ``basicsr/archs/srresnet_arch.py``), independently of raykd's modules.
"""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from raykd.models import create_model
from raykd.models.weights import MODEL_FILE, KeyMap, load_weights, read_state_dict
from raykd.registry import KEYMAPS


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=gen) * 0.02 for k, shape in shapes.items()}


def hustvl_vim_keys(depth: int, dim: int, num_classes: int = 1000, img: int = 224, patch: int = 16):
    """Keys and shapes of a hustvl/Vim ``vim_*_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok
    _div2`` state dict (d_state 16, expand 2, d_conv 4, dt_rank ceil(dim / 16), RMSNorm without bias)."""
    inner, rank, state = 2 * dim, -(-dim // 16), 16
    keys = {
        "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
        "cls_token": (1, 1, dim), "pos_embed": (1, (img // patch) ** 2 + 1, dim),
        "norm_f.weight": (dim,), "head.weight": (num_classes, dim), "head.bias": (num_classes,),
    }
    for i in range(depth):
        p = f"layers.{i}.mixer"
        keys[f"layers.{i}.norm.weight"] = (dim,)
        keys[f"{p}.in_proj.weight"] = (2 * inner, dim)
        keys[f"{p}.out_proj.weight"] = (dim, inner)
        for s in ("", "_b"):
            keys[f"{p}.conv1d{s}.weight"], keys[f"{p}.conv1d{s}.bias"] = (inner, 1, 4), (inner,)
            keys[f"{p}.x_proj{s}.weight"] = (rank + 2 * state, inner)
            keys[f"{p}.dt_proj{s}.weight"], keys[f"{p}.dt_proj{s}.bias"] = (inner, rank), (inner,)
            keys[f"{p}.D{s}"] = (inner,)
        keys[f"{p}.A_log"] = keys[f"{p}.A_b_log"] = (inner, state)
    return keys


def basicsr_msrresnet_keys(scale: int, num_block: int = 16, num_feat: int = 64):
    """Keys and shapes of BasicSR's ``MSRResNet(num_in_ch=3, num_out_ch=3, num_feat, num_block, upscale)``."""
    keys = {}

    def conv(name: str, cin: int, cout: int) -> None:
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, 3, 3), (cout,)

    conv("conv_first", 3, num_feat)
    for i in range(num_block):
        conv(f"body.{i}.conv1", num_feat, num_feat)
        conv(f"body.{i}.conv2", num_feat, num_feat)
    if scale == 4:
        conv("upconv1", num_feat, 4 * num_feat)
        conv("upconv2", num_feat, 4 * num_feat)
    else:
        conv("upconv1", num_feat, scale * scale * num_feat)
    conv("conv_hr", num_feat, num_feat)
    conv("conv_last", num_feat, 3)
    return keys


def test_builtin_keymaps_are_registered():
    assert {"hustvl_vim", "basicsr_msrresnet"} <= set(KEYMAPS.names())
    entry = KEYMAPS.get("basicsr_msrresnet")
    assert isinstance(entry, KeyMap) and entry.model == "msrresnet"
    assert type(create_model(entry.model)) in entry.targets


@pytest.mark.parametrize("name, depth, dim, published", [("vim_tiny", 24, 192, 7.15e6), ("vim_small", 24, 384, 25.8e6)])
def test_hustvl_vim_checkpoint_loads_strictly(tmp_path, name, depth, dim, published):
    official = _random_state(hustvl_vim_keys(depth, dim))
    assert abs(sum(v.numel() for v in official.values()) - published) / published < 0.01  # Vim Table 1
    path = tmp_path / "vim_midclstok.pth"
    torch.save({"model": official}, path)
    model = load_weights(create_model(name), path, keymap="hustvl_vim")
    for key in ("layers.3.mixer.A_b_log", "pos_embed", "head.weight", "layers.23.norm.weight"):
        assert torch.equal(model.state_dict()[key], official[key])


def test_hustvl_vim_head_is_left_out_for_another_number_of_classes(tmp_path):
    official = _random_state(hustvl_vim_keys(2, 48))
    path = tmp_path / "vim.pth"
    torch.save({"model": official}, path)
    model = create_model("vim_micro", num_classes=200, depth=2)
    mismatch = r"head.weight: checkpoint \(1000, 48\) vs model \(200, 48\).*exclude=\('head',\)"
    with pytest.raises(ValueError, match=mismatch):
        load_weights(model, path, keymap="hustvl_vim")
    own_head = model.head.weight.clone()
    load_weights(model, path, keymap="hustvl_vim", exclude=("head",))
    assert torch.equal(model.head.weight, own_head)
    assert torch.equal(model.patch_embed.proj.weight, official["patch_embed.proj.weight"])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_basicsr_msrresnet_checkpoint_loads_strictly(tmp_path, scale):
    official = _random_state(basicsr_msrresnet_keys(scale))
    path = tmp_path / f"msrresnet_x{scale}.pth"
    torch.save({"params": official}, path)
    model = load_weights(create_model("msrresnet", scale=scale), path, keymap="basicsr_msrresnet").eval()
    assert torch.equal(model.body[15].conv2.weight, official["body.15.conv2.weight"])
    if scale == 4:
        assert sum(v.numel() for v in official.values()) == 1_517_571  # 1.52M
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 6)).shape == (1, 3, 5 * scale, 6 * scale)


def test_msrresnet_adds_the_bilinear_upsampling_of_its_input():
    model = create_model("msrresnet", scale=4, n_blocks=1).eval()
    torch.nn.init.zeros_(model.conv_last.weight)
    torch.nn.init.zeros_(model.conv_last.bias)
    x = torch.rand(1, 3, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))


def test_keymap_refuses_the_wrong_target_and_names_the_right_model():
    official = _random_state(basicsr_msrresnet_keys(4))
    with pytest.raises(ValueError, match=r"maps into MSRResNet, not SRResNet.*create_model\('msrresnet'"):
        load_weights(create_model("srresnet"), official, keymap="basicsr_msrresnet")
    with pytest.raises(KeyError, match="unknown key map 'nope'"):
        load_weights(create_model("msrresnet"), official, keymap="nope")


def test_a_callable_keymap_renames_keys():
    source = create_model("msrresnet", scale=2, n_blocks=1, n_feats=8)
    ddp_style = {f"module.{k}": v for k, v in source.state_dict().items()}
    target = create_model("msrresnet", scale=2, n_blocks=1, n_feats=8)
    load_weights(target, ddp_style, keymap=lambda state: {k.removeprefix("module."): v for k, v in state.items()})
    assert torch.equal(target.conv_first.weight, source.conv_first.weight)


def test_a_keymap_named_by_import_path(tmp_path, monkeypatch):
    """A user's own key map needs no registration: ``"module:function"`` of a ``fn(state) -> state``."""
    (tmp_path / "my_keymaps.py").write_text(
        "def strip_module(state):\n"
        "    return {k.removeprefix('module.'): v for k, v in state.items()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = create_model("msrresnet", scale=2, n_blocks=1, n_feats=8)
    ddp_style = {f"module.{k}": v for k, v in source.state_dict().items()}
    target = create_model("msrresnet", scale=2, n_blocks=1, n_feats=8)
    load_weights(target, ddp_style, keymap="my_keymaps:strip_module")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ImportError, match="no_such_keymaps"):
        load_weights(target, ddp_style, keymap="no_such_keymaps:fn")


def test_srvm_takes_a_basicsr_msrresnet_as_its_sr_sub_network(tmp_path):
    official = _random_state(basicsr_msrresnet_keys(4, num_block=2, num_feat=16))
    path = tmp_path / "msrresnet_x4.pth"
    torch.save({"params": official}, path)
    student = create_model("srvm_micro", num_classes=5, img_size=32, sr_arch="msrresnet", sr_checkpoint=path)
    assert torch.equal(student.sr.conv_hr.weight, official["conv_hr.weight"])
    assert student.freeze_sr and not any(p.requires_grad for p in student.sr.parameters())
    with pytest.raises(ValueError, match="sr_arch='edsr'"):
        create_model("srvm_micro", sr_arch="edsr")


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "params", "params_ema"])
def test_read_state_dict_unwraps_the_usual_wrappers(tmp_path, wrapper):
    state = {"a": torch.ones(2), "b": torch.zeros(1)}
    path = tmp_path / "w.pt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    got = read_state_dict(path)
    assert got.keys() == state.keys() and torch.equal(got["a"], state["a"])


def test_read_state_dict_prefers_ema_honours_param_key_and_reads_safetensors_and_checkpoint_dirs(tmp_path):
    ema, raw = {"w": torch.full((2,), 2.0)}, {"w": torch.full((2,), 1.0)}
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "basicsr.pth")
    assert torch.equal(read_state_dict(tmp_path / "basicsr.pth")["w"], ema["w"])
    assert torch.equal(read_state_dict(tmp_path / "basicsr.pth", param_key="params")["w"], raw["w"])
    (tmp_path / "run").mkdir()
    save_file(raw, str(tmp_path / "run" / MODEL_FILE))
    assert torch.equal(read_state_dict(tmp_path / "run")["w"], raw["w"])


def test_read_state_dict_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save({"epoch": 3, "lr": torch.tensor(0.1)}, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match=r"no_weights.pt is not a state dict.*\['epoch', 'lr'\]"):
        read_state_dict(tmp_path / "no_weights.pt")
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "with_args.pth")
    with pytest.raises(ValueError, match="with_args.pth holds Python objects besides tensors"):
        read_state_dict(tmp_path / "with_args.pth")
    with pytest.raises(KeyError, match="no entry 'ema'"):
        read_state_dict(tmp_path / "no_weights.pt", param_key="ema")


def test_load_weights_lists_every_mismatch_with_the_file_and_leaves_the_model_untouched(tmp_path):
    model = create_model("msrresnet", scale=2, n_blocks=2, n_feats=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = create_model("msrresnet", scale=2, n_blocks=2, n_feats=8).state_dict()
    del state["body.1.conv1.bias"]
    state["body.7.conv1.weight"] = torch.zeros(1)
    state["conv_first.weight"] = torch.zeros(8, 3, 5, 5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_weights(model, path)
    message = str(err.value)
    assert str(path) in message
    assert "1 missing" in message and "body.1.conv1.bias" in message
    assert "1 unexpected" in message and "body.7.conv1.weight" in message
    assert "conv_first.weight: checkpoint (8, 3, 5, 5) vs model (8, 3, 3, 3)" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # strict=False forgives missing and unexpected keys, never a wrong shape
    with pytest.raises(ValueError, match="wrong shape"):
        load_weights(model, path, strict=False)
    state["conv_first.weight"] = torch.zeros(8, 3, 3, 3)
    load_weights(model, state, strict=False)
    assert torch.equal(model.conv_first.weight, torch.zeros(8, 3, 3, 3))
