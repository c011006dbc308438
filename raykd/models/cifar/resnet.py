"""CIFAR ResNets (He et al., CVPR 2016, sec. 4.2) and CRD's bottleneck ResNet-50 with a CIFAR stem."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, init_weights, register_variants

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "CifarBottleneckResNet"]


class BasicBlock(nn.Module):
    """Post-activation residual block, two 3x3 convs (He et al., CVPR 2016, fig. 2); 1x1 projection shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        # Not in place: ``x`` may be a captured stage output and must stay intact.
        return F.relu(out + shortcut)


class CifarResNet(CifarNet):
    """CIFAR ResNet-(6n+2) (He et al., CVPR 2016, sec. 4.2): a 3x3 stem and three stages of n basic blocks.

    ``widths`` = (stem, stage1, stage2, stage3); (16, 16, 32, 64) is the original, (32, 64, 128, 256) the
    4x-wide "resnet8x4"/"resnet32x4" of CRD.
    """

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110); got {depth}")
        if len(widths) != 4:
            raise ValueError(f"CifarResNet widths must be (stem, stage1, stage2, stage3); got {tuple(widths)}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        chs = widths[0]
        for i, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = [BasicBlock(chs if j == 0 else width, width, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            chs = width
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("layer1", "layer2", "layer3")
        init_weights(self)



class Bottleneck(nn.Module):
    """Bottleneck block 1x1-3x3-1x1 with 4x expansion (He et al., CVPR 2016, fig. 5 right), the stride on the 3x3
    conv as in CRD's ``resnetv2.py``; 1x1 projection ``shortcut`` (CRD's key name) when the shape changes."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class CifarBottleneckResNet(CifarNet):
    """ImageNet-depth bottleneck ResNet with a CIFAR stem (CRD's ``ResNet50``, ``models/resnetv2.py``): a 3x3
    stride-1 conv to 64 channels without max pooling, four stages of bottleneck blocks at widths 64, 128, 256,
    512 (x4 expansion) and strides 1, 2, 2, 2, global average pooling and ``linear``. Keys follow CRD's file."""

    classifier_name = "linear"

    def __init__(self, blocks: Sequence[int], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(
                f"CifarBottleneckResNet blocks must give 4 stage depths, e.g. (3, 4, 6, 3); got {tuple(blocks)}"
            )
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        chs = 64
        for i, (depth, planes, stride) in enumerate(zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2)), start=1):
            layers = []
            for j in range(depth):
                layers.append(Bottleneck(chs, planes, stride if j == 0 else 1))
                chs = planes * Bottleneck.expansion
            self.add_module(f"layer{i}", nn.Sequential(*layers))
        self.linear = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("layer1", "layer2", "layer3", "layer4")
        init_weights(self)



_RESNET = (16, 16, 32, 64)  # stem, stages (He et al., sec. 4.2)
_RESNET_X4 = (32, 64, 128, 256)  # CRD's 4x-wide variants
register_variants(CifarResNet, {
    **{f"resnet{depth}": {"depth": depth, "widths": _RESNET} for depth in (8, 14, 20, 32, 44, 56, 110)},
    **{f"resnet{depth}x4": {"depth": depth, "widths": _RESNET_X4} for depth in (8, 32)},
})
register_variants(CifarBottleneckResNet, {"resnet50_cifar": {"blocks": (3, 4, 6, 3)}}, docs={"resnet50_cifar": (
    "CRD's CIFAR ``ResNet50`` (bottleneck blocks (3, 4, 6, 3)); 23.71M parameters at 100 classes: torchvision's "
    "ResNet-50 (25,557,032, its documented ``num_params``) with the 3x3 stem in place of the 7x7 one and a 100-way "
    "head. Named apart from timm's ImageNet ``resnet50``, which the registry still serves.")})
