"""ImageNet-depth basic-block ResNets (ResNet-18/34) with a CIFAR stem: DFD's ResNet-18.

DFD (Zhu et al., ICASSP 2019) compares AlexNet, VGG-16 and ResNet-18 on 32x32 CIFAR-10 and SVHN; its ResNet-18's
exact definition was not available to raykd (no released code). The ResNet-18 the CIFAR KD literature trains at
that size is CRD's ``ResNet18`` (Tian et al., ICLR 2020, ``models/resnetv2.py``): He et
al.'s ImageNet ResNet-18/34 (CVPR 2016, table 1: basic blocks, (2, 2, 2, 2) or (3, 4, 6, 3) per stage at widths
64, 128, 256, 512, strides 1, 2, 2, 2) with the 7x7 stride-2 stem and its max pooling replaced by one 3x3
stride-1 convolution to 64 channels, so a 32x32 input reaches the last stage at 4x4. At 10 classes that is
11,173,962 parameters (ResNet-18) and 21,282,122 (ResNet-34): torchvision's documented ImageNet counts
(11,689,512 and 21,797,672) with the 3x3 stem (1,728 weights instead of 9,408) and a 10-way head (5,130 instead
of 513,000).

Blocks are :class:`raykd.models.cifar.resnet.BasicBlock`, so module names are torchvision's / timm's
(``layer2.0.downsample.0.weight``, ``fc``): an ImageNet ResNet-18 checkpoint loads into every layer but
``conv1``. (CRD names the projection ``shortcut`` and the head ``linear``.)
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from raykd.models.cifar.base import CifarNet, init_weights, register_variants
from raykd.models.cifar.resnet import BasicBlock

__all__ = ["CifarBasicResNet"]

_WIDTHS = (64, 128, 256, 512)  # He et al., table 1
_STRIDES = (1, 2, 2, 2)


class CifarBasicResNet(CifarNet):
    """He et al.'s four-stage basic-block ResNet (CVPR 2016, table 1) with a 3x3 stride-1 stem of 64 channels and
    no max pooling (CRD's CIFAR ``ResNet18`` / ``ResNet34``); ``blocks`` per stage."""

    def __init__(self, blocks: Sequence[int], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        if len(blocks) != 4 or any(not isinstance(b, int) or b < 1 for b in blocks):
            raise ValueError(f"CifarBasicResNet blocks must give 4 positive stage depths, e.g. (2, 2, 2, 2) for "
                             f"ResNet-18; got {tuple(blocks)}")
        self.conv1 = nn.Conv2d(in_chans, _WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        chs = _WIDTHS[0]
        for i, (depth, width, stride) in enumerate(zip(blocks, _WIDTHS, _STRIDES), start=1):
            stage = [BasicBlock(chs if j == 0 else width, width, stride if j == 0 else 1) for j in range(depth)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            chs = width
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("layer1", "layer2", "layer3", "layer4")
        init_weights(self)


register_variants(CifarBasicResNet, {"resnet18_cifar": {"blocks": (2, 2, 2, 2)},
                                     "resnet34_cifar": {"blocks": (3, 4, 6, 3)}}, docs={
    "resnet18_cifar": "CRD's CIFAR ResNet-18 (basic blocks (2, 2, 2, 2), 3x3 stem): DFD's "
                      "ResNet-18; 11,173,962 parameters at 10 classes.",
    "resnet34_cifar": "CRD's CIFAR ResNet-34 (basic blocks (3, 4, 6, 3), 3x3 stem); "
                      "21,282,122 parameters at 10 classes.",
})
