"""DFD's three networks at CIFAR resolution (Zhu et al., ICASSP 2019: AlexNet, VGG-16, ResNet-18)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from raykd.models import create_model
from raykd.models.features import capture
from raykd.registry import MODELS

DFD_NETS = ("alexnet_cifar", "vgg16", "resnet18_cifar", "resnet34_cifar")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def basic_resnet_params(blocks: tuple[int, ...], num_classes: int) -> int:
    """He et al.'s table 1 with a 3x3 stem: basic blocks of two 3x3 convs + BN, a 1x1 conv + BN projection where
    the width or stride changes, widths 64..512."""
    total, chs = conv(3, 64, 3) + bn(64), 64
    for depth, width in zip(blocks, (64, 128, 256, 512)):
        for j in range(depth):
            cin = chs if j == 0 else width
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if cin != width:  # the first block of stages 2-4 (stride 2, wider)
                total += conv(cin, width, 1) + bn(width)
        chs = width
    return total + 512 * num_classes + num_classes


def test_resnet18_and_34_cifar_parameter_counts() -> None:
    r18, r34 = create_model("resnet18_cifar", num_classes=10), create_model("resnet34_cifar", num_classes=10)
    # torchvision's documented ImageNet num_params, 3x3 stem for the 7x7 one, 10-way head for the 1000-way one
    assert n_params(r18) == 11_689_512 - 64 * 3 * 49 + 64 * 3 * 9 - 513_000 + 5_130 == 11_173_962
    assert n_params(r34) == 21_797_672 - 64 * 3 * 49 + 64 * 3 * 9 - 513_000 + 5_130 == 21_282_122
    assert n_params(r18) == basic_resnet_params((2, 2, 2, 2), 10)
    assert n_params(r34) == basic_resnet_params((3, 4, 6, 3), 10)
    assert n_params(create_model("resnet18_cifar", num_classes=100)) == basic_resnet_params((2, 2, 2, 2), 100)


@pytest.mark.parametrize("ours,imagenet", [("resnet18_cifar", "resnet18"), ("resnet34_cifar", "resnet34")])
def test_basic_resnet_is_timms_imagenet_resnet_with_a_cifar_stem(ours: str, imagenet: str) -> None:
    """timm's ImageNet ResNet (an independent implementation) has the same layers under the same names: only the
    stem's kernel differs, so its checkpoints load into every other layer."""
    import timm

    with torch.device("meta"):
        mine = create_model(ours, num_classes=10).state_dict()
        ref = timm.create_model(imagenet, num_classes=10).state_dict()
    assert mine.keys() == ref.keys()
    differ = [k for k in mine if mine[k].shape != ref[k].shape]
    assert differ == ["conv1.weight"]
    assert (tuple(mine["conv1.weight"].shape), tuple(ref["conv1.weight"].shape)) == ((64, 3, 3, 3), (64, 3, 7, 7))


def test_alexnet_cifar_layers_and_parameter_count() -> None:
    model = create_model("alexnet_cifar", num_classes=10)
    # pytorch-classification's models/cifar/alexnet.py: convs (out, kernel) with bias, then Linear(256, classes)
    expected = (conv(3, 64, 11, True) + conv(64, 192, 5, True) + conv(192, 384, 3, True) + conv(384, 256, 3, True)
                + conv(256, 256, 3, True) + 256 * 10 + 10)
    assert n_params(model) == expected == 2_472_266  # the README's 2.47M
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [name for name, _ in convs] == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    assert [(m.kernel_size[0], m.stride[0], m.padding[0]) for _, m in convs] == [
        (11, 4, 5), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())
    assert set(model.state_dict()) == {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")} | {
        "classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("name,stages,width", [
    ("alexnet_cifar", [(64, 4, 4), (192, 2, 2), (256, 1, 1)], 256),
    ("resnet18_cifar", [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)], 512),
])
def test_stage_maps_and_penultimate_feature_at_32_px(name: str, stages: list, width: int) -> None:
    """DFD distils the penultimate feature; FitNet / AT hook the stages."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    names = [f"stage:{k}" for k in range(len(model.stage_names))]
    with torch.no_grad():
        out = capture(model, torch.randn(2, 3, 32, 32), ["penultimate", *names])
    assert [tuple(out[n].shape[1:]) for n in names] == stages
    assert out["penultimate"].shape == (2, width) == (2, model.num_features)
    assert out["logits"].shape == (2, 10)
    # the head pools a 1x1 (AlexNet) / 4x4 (ResNet) map: the penultimate feature is the last stage's mean
    torch.testing.assert_close(out["penultimate"], out[names[-1]].mean(dim=(2, 3)))


@pytest.mark.parametrize("name", DFD_NETS)
def test_dfd_nets_are_registered_and_run_at_32_and_64_px(name: str) -> None:
    assert name in MODELS.names()
    model = create_model(name, num_classes=7).eval()
    assert model.get_classifier().out_features == 7
    with torch.no_grad():
        for size in (32, 64):
            logits = model(torch.randn(2, 3, size, size))
            assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def test_bad_sizes_are_refused_with_the_expected_form() -> None:
    from raykd.models.cifar.alexnet import CifarAlexNet
    from raykd.models.cifar.basic_resnet import CifarBasicResNet

    with pytest.raises(ValueError, match=r"4 positive stage depths.*\(2, 2, 2\)"):
        CifarBasicResNet(blocks=(2, 2, 2))
    with pytest.raises(ValueError, match=r"5 convolutions.*\(64, 192\)"):
        CifarAlexNet(widths=(64, 192))
