"""Vision Mamba classifier (raykd/models/vim.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raykd.models import create_model
from raykd.models.features import capture


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,published", [("vim_tiny", 7.15e6), ("vim_small", 25.8e6)])
def test_parameter_counts_match_the_paper(name, published):
    count = _count(create_model(name, num_classes=1000))
    assert abs(count - published) / published < 0.01, count


def test_overrides_build_a_smaller_model():
    model = create_model("vim_tiny", num_classes=200, img_size=64, depth=2)
    assert len(model.layers) == 2 and model.num_features == 192
    assert model.get_classifier().out_features == 200
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)


def test_vim_tiny_at_224_hidden_states():
    torch.manual_seed(0)
    model = create_model("vim_tiny", num_classes=10, depth=2).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model.extract(x, ("penultimate", "hidden"))
        captured = capture(model, x, ["penultimate", "hidden"])
    assert out["hidden"].shape == (1, 2, 197, 192)
    assert out["hidden"].dtype == torch.float32
    assert out["penultimate"].shape == (1, 192) and out["output"].shape == (1, 10)
    # capture hands the model's own output back under the caller's name (the extract protocol's "output")
    assert set(captured) == {"logits", "penultimate", "hidden"}
    torch.testing.assert_close(captured["logits"], out["output"])
    torch.testing.assert_close(captured["hidden"], out["hidden"])
    # class token in the middle: index 196 // 2 = 98 of the final-normed last hidden state feeds the head
    normed = model.norm_f(out["hidden"][:, -1])
    torch.testing.assert_close(out["penultimate"], normed[:, 98])
    torch.testing.assert_close(out["output"], model.head(normed[:, 98]))
    torch.testing.assert_close(model(x), out["output"])


def test_tokens_are_patches_with_a_middle_class_token_plus_position_embedding():
    torch.manual_seed(0)
    model = create_model("vim_micro", num_classes=5, img_size=32).eval()
    x = torch.rand(2, 3, 32, 48)  # a 2 x 3 patch grid: cls goes to index 6 // 2 = 3
    seen = {}
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.update(tokens=args[0]))
    with torch.no_grad():
        model(x)
        conv = model.patch_embed.proj
        patches = F.conv2d(x, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2)
        pos = model._pos_embed((2, 3))
    tokens = seen["tokens"]
    assert tokens.shape == (2, 7, 48)
    torch.testing.assert_close(tokens[:, :3], patches[:, :3] + pos[:, :3])
    torch.testing.assert_close(tokens[:, 3], model.cls_token[:, 0].expand(2, -1) + pos[:, 3])
    torch.testing.assert_close(tokens[:, 4:], patches[:, 3:] + pos[:, 4:])


def test_position_embedding_is_resized_bicubically_around_the_class_token():
    model = create_model("vim_micro", num_classes=5, img_size=64)  # 4 x 4 grid, cls at 8
    with torch.no_grad():
        model.pos_embed.zero_()
        model.pos_embed[:, 8] = 7.0  # the class token's entry
        grid = torch.arange(16.0).view(4, 4)
        model.pos_embed[0, :8] = grid.flatten()[:8, None]
        model.pos_embed[0, 9:] = grid.flatten()[8:, None]
        resized = model._pos_embed((2, 6))
    assert resized.shape == (1, 13, 48)
    assert torch.all(resized[0, 6] == 7.0)  # 12 patches -> class token at index 6
    patches = torch.cat([resized[0, :6], resized[0, 7:]])[:, 0].view(2, 6)
    expected = F.interpolate(grid[None, None], size=(2, 6), mode="bicubic", align_corners=False)[0, 0]
    torch.testing.assert_close(patches, expected)


def test_small_inputs_and_features_protocol():
    torch.manual_seed(0)
    model = create_model("vim_micro", num_classes=7, img_size=32)
    x = torch.rand(3, 3, 32, 32)
    out = capture(model, x, ["penultimate", "hidden", "stage:-1"])
    assert out["logits"].shape == (3, 7)
    assert out["hidden"].shape == (3, 4, 5, 48)  # batch-first: (B, depth, L, D)
    torch.testing.assert_close(out["stage:-1"], out["hidden"][:, -1])
    # every layer's hidden state is differentiable back to the patch embedding
    out["hidden"].square().mean().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.layers[0].mixer.A_b_log.grad.abs().sum() > 0


def test_bad_inputs_and_names_are_reported():
    model = create_model("vim_micro", num_classes=3, img_size=32)
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        model(torch.rand(1, 3, 40, 32))
    with pytest.raises(ValueError, match="unknown output 'attn'"):
        model.extract(torch.rand(1, 3, 32, 32), ("attn",))
    with pytest.raises(ValueError, match="'stage:9'"):
        model.extract(torch.rand(1, 3, 32, 32), ("stage:9",))


def test_no_weight_decay_lists_embeddings_and_ssm_parameters():
    model = create_model("vim_micro", num_classes=3, img_size=32)
    names = model.no_weight_decay()
    assert {"pos_embed", "cls_token", "layers.0.mixer.A_log", "layers.3.mixer.D_b"} <= names
    assert "layers.0.mixer.in_proj.weight" not in names
