"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016) in CRD's CIFAR layout."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, init_weights, register_variants

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation wide block BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 (Zagoruyko & Komodakis, 2016, sec. 2).

    When the width changes, the 1x1 projection shortcut takes the activated input, as in the reference code.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        # camelCase keeps the reference checkpoints' key "convShortcut".
        self.convShortcut = None if in_chs == out_chs else nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x), inplace=True)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = F.relu(self.bn2(self.conv1(act)), inplace=True)
        out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(CifarNet):
    """WRN-d-k (Zagoruyko & Komodakis, BMVC 2016, table 1): (d-4)/6 blocks per stage, widths 16k, 32k, 64k."""

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40); got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        chs = 16
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = [
                WideBasicBlock(chs if j == 0 else width, width, stride if j == 0 else 1, drop_rate) for j in range(n)
            ]
            # The extra ``layer`` level reproduces the reference key names ("block1.layer.0.conv1.weight").
            self.add_module(f"block{i}", nn.Sequential(OrderedDict(layer=nn.Sequential(*blocks))))
            chs = width
        self.bn1 = nn.BatchNorm2d(chs)
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("block1", "block2", "block3")
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(x))


# WRN-depth-widen (Zagoruyko & Komodakis, table 1): CRD's teacher/student pairs
register_variants(WideResNet, {f"wrn_{d}_{k}": {"depth": d, "widen_factor": k} for d in (16, 40) for k in (1, 2)})
