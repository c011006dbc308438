"""ShuffleNetV2 (Ma et al., ECCV 2018) with CRD's CIFAR stem."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, channel_shuffle, init_weights, register_variants

__all__ = ["ShuffleV2Block", "ShuffleV2DownBlock", "ShuffleNetV2"]


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 basic unit (Ma et al., ECCV 2018, fig. 3c): channel split, 1x1-dw3x3-1x1 on one half."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        half = chs // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        keep, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)), inplace=True)
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)), inplace=True)
        return channel_shuffle(torch.cat([keep, out], dim=1), 2)


class ShuffleV2DownBlock(nn.Module):
    """ShuffleNetV2 down-sampling unit (Ma et al., ECCV 2018, fig. 3d): two stride-2 branches, concatenated."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, in_chs, 3, 2, 1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))), inplace=True)
        right = F.relu(self.bn3(self.conv3(x)), inplace=True)
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))), inplace=True)
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(CifarNet):
    """ShuffleNetV2 1x (Ma et al., ECCV 2018, table 5) with CRD's CIFAR stem (1x1 conv, no pooling)."""

    classifier_name = "linear"

    def __init__(
        self,
        num_classes: int = 100,
        widths: Sequence[int] = (116, 232, 464, 1024),
        depths: Sequence[int] = (3, 7, 3),
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) + 1:
            raise ValueError(f"ShuffleNetV2 widths need one entry per stage plus the last conv; got {tuple(widths)}")
        self.conv1 = nn.Conv2d(in_chans, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        chs = 24
        for i, (width, depth) in enumerate(zip(widths[:-1], depths), start=1):
            blocks = [ShuffleV2DownBlock(chs, width)] + [ShuffleV2Block(width) for _ in range(depth)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            chs = width
        self.conv2 = nn.Conv2d(chs, widths[-1], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[-1])
        self.linear = nn.Linear(widths[-1], num_classes)
        self.num_features = widths[-1]
        self.stage_names = ("layer1", "layer2", "layer3")
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(super().forward_features(x))), inplace=True)


register_variants(ShuffleNetV2, {"shufflenetv2": {}})  # 1x: the constructor's defaults
