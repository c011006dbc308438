"""MobileNetV2 (Sandler et al., CVPR 2018) as CRD builds it for CIFAR."""

from __future__ import annotations

from torch import Tensor, nn

from raykd.models.cifar.base import CifarNet, init_weights, register_variants

__all__ = ["InvertedResidual", "MobileNetV2"]


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


class MobileNetV2(CifarNet):
    """MobileNetV2 (Sandler et al., CVPR 2018, table 2) as in CRD: stride-2 stem, last stage at 1/16.

    ``stage_names`` are the block groups CRD taps for features (ends of the 1/2, 1/4, 1/8 and 1/16 scales).
    """

    classifier_name = "classifier.0"

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
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.conv2(x)


register_variants(MobileNetV2, {"mobilenetv2": {}}, docs={"mobilenetv2": "CRD's \"MobileNetV2\": width multiplier 0.5, "
                                                                           "expansion 6."})
