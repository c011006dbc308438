"""VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015) in CRD's five-block CIFAR layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, init_weights, register_variants

__all__ = ["VGG"]


class VGG(CifarNet):
    """VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015, table 1) in CRD's five-block CIFAR layout.

    Blocks 0-3 are each followed by 2x2 max pooling except that the pool before block 4 is applied only to
    inputs of at least 64 px (CRD's TinyImageNet rule), so block 4 runs on a 4x4 map for 32 and 64 px input.
    """

    classifier_name = "classifier"

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"VGG cfg must list the conv widths of 5 blocks; got {len(cfg)} blocks")
        chs = in_chans
        for i, widths in enumerate(cfg):
            layers: list[nn.Module] = []
            for width in widths:
                layers += [nn.Conv2d(chs, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                chs = width
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.classifier = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = ("block0", "block1", "block2", "block3", "block4")
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        pool_before_last = x.shape[-2] >= 64
        x = F.max_pool2d(self.block0(x), 2)
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block3(x)
        if pool_before_last:
            x = F.max_pool2d(x, 2)
        return self.block4(x)


# conv widths of the five blocks (Simonyan & Zisserman, table 1; vgg8 is CRD's)
_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
register_variants(VGG, {name: {"cfg": cfg} for name, cfg in _CFGS.items()})
