"""ShuffleNetV1 (Zhang et al., CVPR 2018) with CRD's CIFAR stem."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, channel_shuffle, init_weights, register_variants

__all__ = ["ShuffleV1Block", "ShuffleNetV1"]


class ShuffleV1Block(nn.Module):
    """ShuffleNet unit (Zhang et al., CVPR 2018, fig. 2b/c): grouped 1x1, shuffle, depthwise 3x3, grouped 1x1.

    Stride 2 concatenates a 3x3 average-pooled shortcut, so ``out_chs`` counts only the residual branch.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_chs // 4
        self.stride = stride
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_chs, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_chs, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], dim=1))
        return F.relu(out + x)


class ShuffleNetV1(CifarNet):
    """ShuffleNetV1 1x, g=3 (Zhang et al., CVPR 2018, table 1) with CRD's CIFAR stem (1x1 conv, no pooling)."""

    classifier_name = "linear"

    def __init__(
        self,
        num_classes: int = 100,
        widths: Sequence[int] = (240, 480, 960),
        depths: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        stem = 24
        self.conv1 = nn.Conv2d(in_chans, stem, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        chs = stem
        for i, (width, depth) in enumerate(zip(widths, depths), start=1):
            blocks = []
            for j in range(depth):
                # The first unit's pointwise conv sees the thin stem and is not grouped (paper, sec. 3.3).
                first_groups = 1 if i == 1 and j == 0 else groups
                branch = width - chs if j == 0 else width
                blocks.append(ShuffleV1Block(chs, branch, 2 if j == 0 else 1, groups, first_groups))
                chs = width
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("layer1", "layer2", "layer3")
        init_weights(self)



register_variants(ShuffleNetV1, {"shufflenetv1": {}})  # 1x, g=3: the constructor's defaults
