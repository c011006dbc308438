"""RCAN: Image Super-Resolution Using Very Deep Residual Channel Attention Networks (Zhang et al., ECCV 2018).

Module names follow the official RCAN code (``sub_mean``, ``head.0``, ``body.G.body.B.body.{0,2}``,
``body.G.body.B.body.3.conv_du.{0,2}``, ``body.G.body.<n_resblocks>``, ``body.<n_resgroups>``, ``tail.0.*``,
``tail.1``, ``add_mean``), so its released ``RCAN_BIX{2,3,4}.pt`` load with
:func:`raykd.models.sr_common.load_official`.

Input and output are RGB in [0, 1]; the network runs in [0, ``rgb_range``] (255 officially) internally.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from raykd.models.registry import register_model
from raykd.models.sr_common import MeanShiftedSR, check_scale, conv3x3


class ChannelAttention(nn.Module):
    """Channel attention (Sec. 3.3, eqs. 5-7): global average pool, 1x1 conv down by ``reduction``, ReLU,
    1x1 conv up, sigmoid gate multiplied onto the input channels."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class RCAB(nn.Module):
    """Residual channel attention block (Sec. 3.4, eq. 8): conv-ReLU-conv, channel attention, identity skip."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """Residual group (Sec. 3.2, eq. 4): ``n_resblocks`` RCABs and a conv, with a short skip connection."""

    def __init__(self, channels: int, reduction: int, n_resblocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(channels, reduction) for _ in range(n_resblocks)], conv3x3(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(MeanShiftedSR):
    """Residual-in-residual network (Sec. 3.1-3.2, Fig. 2): head conv, ``n_resgroups`` residual groups + conv
    with a long skip connection, sub-pixel upsampler, output conv; DIV2K mean removed and added back."""

    def __init__(
        self,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__(scale, n_feats, rgb_range,
                         lambda: [ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)])

    @property
    def stage_names(self) -> tuple[str, str, str]:
        """Three points of the body (``stage:0..2``, :mod:`raykd.models.features`): the outputs of the residual
        groups ``3n // 10`` and ``7n // 10`` in, and the body's last conv, before the long skip.

        FAKD's released RCAN (github.com/Vincent-Hoo/Knowledge-Distillation-for-Super-resolution) returns, as its
        feature maps 1-3 (the ``--features [1,2,3]`` default), the outputs of groups 2 and 6 (0-based) of its 10
        and of ``body_tail``: the fractions here give exactly those for 10 groups. A point with no group before it
        is the head conv. That code's third map is taken after its in-place ``res += x`` (the long skip added);
        here it is the body's own output.
        """
        groups = len(self.body) - 1
        first, second = 3 * groups // 10, 7 * groups // 10
        return (f"body.{first - 1}" if first else "head.0", f"body.{second - 1}" if second else "head.0",
                f"body.{groups}")


@register_model
def rcan(scale: int = 4, **kwargs) -> RCAN:
    """RCAN (Sec. 4.1): 10 residual groups x 20 RCABs, 64 channels, reduction 16; 15.6M parameters at x4."""
    return RCAN(check_scale(scale, "rcan"), **{"n_resgroups": 10, "n_resblocks": 20, **kwargs})


@register_model
def rcan_light(scale: int = 4, **kwargs) -> RCAN:
    """MTKD's RCAN student: 10 residual groups x 6 RCABs, 64 channels, reduction 16 (5.17M parameters at x4)."""
    return RCAN(check_scale(scale, "rcan_light"), **{"n_resgroups": 10, "n_resblocks": 6, **kwargs})
