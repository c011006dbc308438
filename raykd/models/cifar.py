"""CIFAR-style classifiers of the knowledge-distillation literature (the CRD / mdistiller "cifar" model zoo).

Tian et al., "Contrastive Representation Distillation", ICLR 2020 (sec. 4.1, appendix) fixed the teacher/student
pairs that later KD papers (DKD, FiGKD, ...) report on CIFAR-100 and TinyImageNet: CIFAR ResNets (He et al.,
2016, sec. 4.2), the bottleneck ResNet-50 with a CIFAR stem (CRD's ``ResNet50``, FiGKD's R50 -> MV2 teacher),
Wide ResNets (Zagoruyko & Komodakis, 2016), VGG with BatchNorm, MobileNetV2 at width 0.5,
ShuffleNetV1 (g=3) and ShuffleNetV2 (1x). Layers and widths follow those reference models, so parameter counts
agree and module names give the same ``state_dict`` keys as their released checkpoints.

Differences from the reference code, none of which changes a parameter or a 32x32 output: heads use global
adaptive average pooling (so 64x64 TinyImageNet input works), ``forward`` returns only the logits (features
come from :mod:`raykd.models.features`), and VGG applies its last ReLU inside each block so a hook on a
stage sees the activated map.

Every net follows timm's conventions: ``get_classifier()`` (the final ``nn.Linear``), ``num_features`` (its
input width), ``forward_features`` / ``forward_head``, plus ``stage_names``, the module paths of the stages
in order, which FitNet / AT hooks use.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.registry import register_model

__all__ = ["CifarBottleneckResNet", "CifarResNet", "WideResNet", "VGG", "MobileNetV2", "ShuffleNetV1", "ShuffleNetV2"]


def _init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions and identity BatchNorm, the initialisation of the reference zoo."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel shuffle (Zhang et al., ShuffleNet, CVPR 2018, sec. 3.1): (B, g*n, H, W) -> interleave groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class _CifarNet(nn.Module):
    """timm-style head shared by the zoo: global average pool, flatten, linear classifier."""

    stage_names: tuple[str, ...]
    num_features: int

    def get_classifier(self) -> nn.Linear:
        raise NotImplementedError(f"{type(self).__name__} must return its final nn.Linear from get_classifier()")

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features()")

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------- ResNet


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


class CifarResNet(_CifarNet):
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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))


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


class CifarBottleneckResNet(_CifarNet):
    """ImageNet-depth bottleneck ResNet with a CIFAR stem (CRD's ``ResNet50``, ``models/resnetv2.py``): a 3x3
    stride-1 conv to 64 channels without max pooling, four stages of bottleneck blocks at widths 64, 128, 256,
    512 (x4 expansion) and strides 1, 2, 2, 2, global average pooling and ``linear``. Keys follow CRD's file."""

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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.linear

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ----------------------------------------------------------------------------------------------- Wide ResNet


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


class WideResNet(_CifarNet):
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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(x))


# ------------------------------------------------------------------------------------------------------ VGG

_VGG_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class VGG(_CifarNet):
    """VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015, table 1) in CRD's five-block CIFAR layout.

    Blocks 0-3 are each followed by 2x2 max pooling except that the pool before block 4 is applied only to
    inputs of at least 64 px (CRD's TinyImageNet rule), so block 4 runs on a 4x4 map for 32 and 64 px input.
    """

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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def forward_features(self, x: Tensor) -> Tensor:
        pool_before_last = x.shape[-2] >= 64
        x = F.max_pool2d(self.block0(x), 2)
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block3(x)
        if pool_before_last:
            x = F.max_pool2d(x, 2)
        return self.block4(x)


# ---------------------------------------------------------------------------------------------- MobileNetV2


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (Sandler et al., CVPR 2018, table 1), ReLU as in CRD.

    The 1x1 expansion is kept even at expansion ratio 1, as in the reference model.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid = in_chs * expand_ratio
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(_CifarNet):
    """MobileNetV2 (Sandler et al., CVPR 2018, table 2) as in CRD: stride-2 stem, last stage at 1/16.

    ``stage_names`` are the block groups CRD taps for features (ends of the 1/2, 1/4, 1/8 and 1/16 scales).
    """

    # (expansion t, width c, repeats n, first stride s); t=None means the net's expand_ratio
    _SETTINGS: tuple[tuple[int | None, int, int, int], ...] = (
        (1, 16, 1, 1),
        (None, 24, 2, 1),
        (None, 32, 3, 2),
        (None, 64, 4, 2),
        (None, 96, 3, 1),
        (None, 160, 3, 2),
        (None, 320, 1, 1),
    )

    def __init__(
        self, num_classes: int = 100, width_mult: float = 0.5, expand_ratio: int = 6, in_chans: int = 3
    ) -> None:
        super().__init__()
        chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, chs, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in self._SETTINGS:
            width = int(c * width_mult)
            group = []
            for j in range(n):
                group.append(InvertedResidual(chs, width, s if j == 0 else 1, expand_ratio if t is None else t))
                chs = width
            self.blocks.append(nn.Sequential(*group))
        # The 1280-wide last conv is only widened, never narrowed (Sandler et al., sec. 6.1).
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(chs, last, 1)
        # A one-layer Sequential keeps the reference key "classifier.0.weight".
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        self.num_features = last
        self.stage_names = ("blocks.1", "blocks.2", "blocks.4", "blocks.6")
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.classifier[0]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.conv2(x)


# ---------------------------------------------------------------------------------------------- ShuffleNets


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
        out = _channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], dim=1))
        return F.relu(out + x)


class ShuffleNetV1(_CifarNet):
    """ShuffleNetV1 1x, g=3 (Zhang et al., CVPR 2018, table 1) with CRD's CIFAR stem (1x1 conv, no pooling)."""

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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.linear

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))


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
        return _channel_shuffle(torch.cat([keep, out], dim=1), 2)


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
        return _channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(_CifarNet):
    """ShuffleNetV2 1x (Ma et al., ECCV 2018, table 5) with CRD's CIFAR stem (1x1 conv, no pooling)."""

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
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.linear

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.bn2(self.conv2(x)), inplace=True)


# ------------------------------------------------------------------------------------------------- registry

_RESNET = (16, 16, 32, 64)
_RESNET_X4 = (32, 64, 128, 256)


@register_model
def resnet8(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(8, _RESNET, num_classes, **kw)


@register_model
def resnet14(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(14, _RESNET, num_classes, **kw)


@register_model
def resnet20(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(20, _RESNET, num_classes, **kw)


@register_model
def resnet32(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(32, _RESNET, num_classes, **kw)


@register_model
def resnet44(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(44, _RESNET, num_classes, **kw)


@register_model
def resnet56(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(56, _RESNET, num_classes, **kw)


@register_model
def resnet110(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(110, _RESNET, num_classes, **kw)


@register_model
def resnet8x4(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(8, _RESNET_X4, num_classes, **kw)


@register_model
def resnet32x4(num_classes: int = 100, **kw) -> CifarResNet:
    return CifarResNet(32, _RESNET_X4, num_classes, **kw)


@register_model
def resnet50_cifar(num_classes: int = 100, **kw) -> CifarBottleneckResNet:
    """CRD's CIFAR ``ResNet50`` (bottleneck blocks (3, 4, 6, 3)); 23.71M parameters at 100 classes: torchvision's
    ResNet-50 (25,557,032, its documented ``num_params``) with the 3x3 stem in place of the 7x7 one and a 100-way
    head. Named apart from timm's ImageNet ``resnet50``, which the registry still serves."""
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes, **kw)


@register_model
def wrn_16_1(num_classes: int = 100, **kw) -> WideResNet:
    return WideResNet(16, 1, num_classes, **kw)


@register_model
def wrn_16_2(num_classes: int = 100, **kw) -> WideResNet:
    return WideResNet(16, 2, num_classes, **kw)


@register_model
def wrn_40_1(num_classes: int = 100, **kw) -> WideResNet:
    return WideResNet(40, 1, num_classes, **kw)


@register_model
def wrn_40_2(num_classes: int = 100, **kw) -> WideResNet:
    return WideResNet(40, 2, num_classes, **kw)


@register_model
def vgg8(num_classes: int = 100, **kw) -> VGG:
    return VGG(_VGG_CFGS["vgg8"], num_classes, **kw)


@register_model
def vgg11(num_classes: int = 100, **kw) -> VGG:
    return VGG(_VGG_CFGS["vgg11"], num_classes, **kw)


@register_model
def vgg13(num_classes: int = 100, **kw) -> VGG:
    return VGG(_VGG_CFGS["vgg13"], num_classes, **kw)


@register_model
def vgg16(num_classes: int = 100, **kw) -> VGG:
    return VGG(_VGG_CFGS["vgg16"], num_classes, **kw)


@register_model
def vgg19(num_classes: int = 100, **kw) -> VGG:
    return VGG(_VGG_CFGS["vgg19"], num_classes, **kw)


@register_model
def mobilenetv2(num_classes: int = 100, **kw) -> MobileNetV2:
    """CRD's "MobileNetV2": width multiplier 0.5, expansion 6."""
    return MobileNetV2(num_classes, **kw)


@register_model
def shufflenetv1(num_classes: int = 100, **kw) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes, **kw)


@register_model
def shufflenetv2(num_classes: int = 100, **kw) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, **kw)
