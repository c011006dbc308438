"""AlexNet at CIFAR resolution: DFD's AlexNet.

DFD (Zhu et al., ICASSP 2019) trains AlexNet (citing Krizhevsky et al., NIPS 2012) on 32x32 CIFAR-10 and SVHN.
Its layer sizes were not available to raykd (the paper's text was not at hand and it released no code), so this
is the CIFAR AlexNet PyTorch work uses: Wei Yang's ``pytorch-classification`` (``models/cifar/alexnet.py``,
"AlexNet for CIFAR10. FC layers are removed. Paddings are adjusted"): the five convolutions of the single-tower
AlexNet (Krizhevsky, "One weird trick...", 2014; torchvision's ``alexnet``) at widths 64, 192, 384, 256, 256 and
kernels 11 (stride 4, padding 5), 5, 3, 3, 3, each with ReLU; 2x2 max pooling after the first, second and fifth;
no BatchNorm, no dropout; and one linear layer on the 256-channel 1x1 map in place of the three fully connected
layers. 2,472,266 parameters at 10 classes, the 2.47M that repository's README lists.

Module names (``features.<i>``, ``classifier``) are that file's. PyTorch's default initialisation, as there
(its README trains it from lr 0.01, "without BN").
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, register_variants

__all__ = ["CifarAlexNet"]

_KERNELS = (11, 5, 3, 3, 3)
_POOL_AFTER = (True, True, False, False, True)


class CifarAlexNet(CifarNet):
    """Five-convolution AlexNet for 32x32 inputs (``pytorch-classification``'s CIFAR ``AlexNet``); ``widths``: the
    five convolutions' output channels. Stages are the three pooled maps (8x8 -> 4x4, 2x2, 1x1 at 32 px); the head
    pools globally, which is the identity on the 1x1 map of a 32 px input and lets 64 px inputs through."""

    classifier_name = "classifier"

    def __init__(self, widths: Sequence[int], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        if len(widths) != len(_KERNELS):
            raise ValueError(f"CifarAlexNet widths must give the {len(_KERNELS)} convolutions' channels, e.g. "
                             f"(64, 192, 384, 256, 256); got {tuple(widths)}")
        layers: list[nn.Module] = []
        stages: list[str] = []
        chs = in_chans
        for width, kernel, pool in zip(widths, _KERNELS, _POOL_AFTER):
            stride, padding = (4, 5) if kernel == 11 else (1, kernel // 2)
            layers += [nn.Conv2d(chs, width, kernel, stride, padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
                stages.append(f"features.{len(layers) - 1}")
            chs = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.stage_names = tuple(stages)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


register_variants(CifarAlexNet, {"alexnet_cifar": {"widths": (64, 192, 384, 256, 256)}}, docs={
    "alexnet_cifar": "pytorch-classification's CIFAR AlexNet (DFD's AlexNet): convolutions 64, 192, 384, 256, 256, "
                     "one linear head; 2,472,266 parameters at 10 classes."})
