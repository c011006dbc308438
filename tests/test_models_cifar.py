from __future__ import annotations

import pytest
import torch
from torch import nn

from raykd.models import create_model
from raykd.registry import MODELS
from raykd.models.cifar.base import channel_shuffle
from raykd.models.cifar.vgg import VGG

CIFAR_NETS = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "mobilenetv2", "shufflenetv1", "shufflenetv2", "resnet50_cifar",
)  # fmt: skip

# Parameter counts at 100 classes reported for the CRD / mdistiller CIFAR-100 zoo (Tian et al., ICLR 2020).
PUBLISHED_PARAMS_M = {
    "resnet32x4": 7.43,
    "resnet8x4": 1.23,
    "wrn_40_2": 2.26,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "vgg13": 9.46,
    "vgg8": 3.97,
    "resnet56": 0.86,
    "resnet110": 1.74,
    # torchvision's documented ResNet-50 num_params 25,557,032, with the 3x3 CIFAR stem (1,728 instead of 9,408)
    # and a 100-way head (204,900 instead of 2,049,000): 23,705,252, the 23.71M KD papers list for CRD's ResNet50
    "resnet50_cifar": 23.71,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_parameter_count_matches_published(name: str) -> None:
    millions = n_params(create_model(name, num_classes=100)) / 1e6
    assert millions == pytest.approx(PUBLISHED_PARAMS_M[name], rel=0.01)


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_forward_at_cifar_and_tinyimagenet_sizes(name: str) -> None:
    assert name in MODELS.names()
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (model.num_features, 7)
    for stage in model.stage_names:
        model.get_submodule(stage)
    with torch.no_grad():
        for size in (32, 64):
            logits = model(torch.randn(2, 3, size, size))
            assert logits.shape == (2, 7)
            assert torch.isfinite(logits).all()


def test_stage_names_are_in_forward_order_with_growing_stride() -> None:
    model = create_model("wrn_16_1", num_classes=10).eval()
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        model.get_submodule(s).register_forward_hook(lambda m, a, o, s=s: seen.append((s, tuple(o.shape))))
        for s in model.stage_names
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert seen == [("block1", (1, 16, 32, 32)), ("block2", (1, 32, 16, 16)), ("block3", (1, 64, 8, 8))]


def test_state_dict_keys_match_reference_checkpoints() -> None:
    # Key names of the released CRD teachers / mdistiller students, so their checkpoints load unchanged.
    expected = {
        "resnet8x4": ["conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.weight"],
        "wrn_40_2": ["block1.layer.0.convShortcut.weight", "block3.layer.5.conv2.weight", "bn1.weight", "fc.bias"],
        "vgg13": ["block0.0.weight", "block0.0.bias", "block0.1.running_mean", "block0.3.weight", "classifier.weight"],
        "mobilenetv2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.weight", "classifier.0.weight"],
        "shufflenetv1": ["layer1.0.conv1.weight", "layer3.3.bn3.weight", "linear.weight"],
        "shufflenetv2": ["layer1.0.conv5.weight", "layer2.7.conv3.weight", "conv2.weight", "linear.weight"],
        "resnet50_cifar": ["conv1.weight", "layer1.0.shortcut.0.weight", "layer4.2.bn3.running_mean", "linear.weight"],
    }
    for name, keys in expected.items():
        state = create_model(name).state_dict()
        missing = [k for k in keys if k not in state]
        assert not missing, f"{name}: {missing}"
    # WRN blocks whose width does not change carry no shortcut weights.
    assert "block1.layer.1.convShortcut.weight" not in create_model("wrn_40_2").state_dict()


def test_channel_shuffle_matches_index_formula() -> None:
    groups, per_group = 3, 4
    x = torch.arange(groups * per_group, dtype=torch.float32).view(1, -1, 1, 1)
    out = channel_shuffle(x, groups).flatten().tolist()
    # Output channel j*g + i takes input channel i*n + j (group i, member j).
    expected = [float(i * per_group + j) for j in range(per_group) for i in range(groups)]
    assert out == expected


def test_vgg_pools_before_last_block_only_for_large_inputs() -> None:
    model = create_model("vgg8", num_classes=10).eval()
    assert isinstance(model, VGG)
    shapes = []
    handle = model.block4.register_forward_hook(lambda m, a, o: shapes.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
        model(torch.zeros(1, 3, 64, 64))
    handle.remove()
    assert shapes == [(4, 4), (4, 4)]


def test_create_model_falls_back_to_timm_and_rejects_unknown_names() -> None:
    import timm

    model = create_model("resnet18", num_classes=10, pretrained=False)
    assert isinstance(model, timm.models.ResNet)
    assert model.get_classifier().out_features == 10
    # raykd's CIFAR VGG shadows timm's ImageNet VGG of the same name.
    assert isinstance(create_model("vgg13"), VGG)
    with pytest.raises(KeyError, match="no_such_net.*resnet8x4"):
        create_model("no_such_net")


def test_resnet50_cifar_is_timms_resnet50_with_a_cifar_stem() -> None:
    """Same bottleneck stages as an ImageNet ResNet-50 (timm's, an independent implementation): only the 7x7 stem
    becomes 3x3, so the counts differ by exactly 64 * 3 * (49 - 9)."""
    import timm

    with torch.device("meta"):
        ours = create_model("resnet50_cifar", num_classes=100)
        imagenet = timm.create_model("resnet50", num_classes=100)
    assert n_params(imagenet) - n_params(ours) == 64 * 3 * (49 - 9)
    assert n_params(ours) == 25_557_032 - 9_408 + 1_728 - 2_049_000 + 204_900
    assert ours.num_features == 2048 and ours.stage_names == ("layer1", "layer2", "layer3", "layer4")
    assert "resnet50" not in MODELS.names()  # timm's name stays timm's
    model = create_model("resnet50_cifar", num_classes=10).eval()
    shapes = []
    for stage in model.stage_names:
        model.get_submodule(stage).register_forward_hook(lambda m, a, o: shapes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert shapes == [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]
