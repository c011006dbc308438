"""DVMSR super-resolution network (raykd/models/dvmsr.py)."""
from __future__ import annotations

import pytest
import torch

from raykd.models import create_model
from raykd.models.features import forward_features


def test_student_parameter_count_matches_the_paper():
    count = sum(p.numel() for p in create_model("dvmsr", scale=4).parameters())
    assert abs(count - 0.424e6) / 0.424e6 < 0.02, count


@pytest.mark.parametrize("name,channels,blocks", [("dvmsr", 60, 4), ("dvmsr_teacher", 192, 8)])
def test_configurations(name, channels, blocks):
    model = create_model(name, scale=3)
    assert len(model.layers) == blocks and all(len(r.residual_group.blocks) == 2 for r in model.layers)
    assert model.conv_first.out_channels == channels
    assert model.upsample[0].out_channels == 3 * 9


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_non_square_images_of_any_size(scale):
    torch.manual_seed(0)
    model = create_model("dvmsr", scale=scale, depths=(1, 1)).eval()
    x = torch.rand(2, 3, 7, 11)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 7 * scale, 11 * scale)
    assert torch.isfinite(y).all()


def test_extract_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_model("dvmsr", scale=2)
    x = torch.rand(1, 3, 6, 9)
    out = forward_features(model, x, ["output", "body", "feat:0", "feat:-1"])
    assert out["output"].shape == (1, 3, 12, 18)
    assert out["output"] is out["logits"]
    assert out["body"].shape == out["feat:0"].shape == out["feat:-1"].shape == (1, 60, 6, 9)
    torch.testing.assert_close(model(x), out["output"])
    (out["output"].mean() + out["feat:0"].mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_feature_k_is_the_output_of_rssb_k():
    torch.manual_seed(0)
    model = create_model("dvmsr", scale=2, depths=(1, 1, 1)).eval()
    x = torch.rand(1, 3, 5, 4)
    captured = []
    for layer in model.layers:
        layer.register_forward_hook(lambda mod, args, out: captured.append(out))
    with torch.no_grad():
        out = model.extract(x, ("feat:1",))
    # RSSB outputs are row-major token sequences; feat:<k> is the same tensor as an image
    torch.testing.assert_close(out["feat:1"], captured[1].transpose(1, 2).reshape(1, 60, 5, 4))


def test_vimm_residual_switch_reproduces_the_official_block():
    torch.manual_seed(0)
    model = create_model("dvmsr", depths=(1,), vimm_residual=False)
    vimm = model.layers[0].residual_group.blocks[0]
    x = torch.rand(2, 10, 60)
    torch.testing.assert_close(vimm(x), vimm.mixer(vimm.norm(x)))
    vimm.residual = True
    torch.testing.assert_close(vimm(x), x + vimm.mixer(vimm.norm(x)))


def test_bad_names_and_inputs_are_reported():
    model = create_model("dvmsr", depths=(1,))
    with pytest.raises(ValueError, match="'feat:3'"):
        model.extract(torch.rand(1, 3, 4, 4), ("feat:3",))
    with pytest.raises(ValueError, match="unknown output 'hidden'"):
        model.extract(torch.rand(1, 3, 4, 4), ("hidden",))
    with pytest.raises(ValueError, match="expected \\(N, 3, H, W\\)"):
        model(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="scale=5"):
        create_model("dvmsr", scale=5)
