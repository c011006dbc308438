"""SRResNet, the generator of SRGAN (Ledig et al., CVPR 2017, Sec. 2.2 and Fig. 4).

The authors released no PyTorch weights, so the module names here are raykd's own. Input is RGB in [0, 1] and
the output is trained towards RGB in [0, 1] (the paper scales HR targets to [-1, 1]; raykd keeps one range for
every SR model). x4 uses two PixelShuffle(2) stages as in the paper, x2 one, x3 a single PixelShuffle(3).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from raykd.models.registry import register_model
from raykd.models.sr_common import PixelShuffleUpsampler, check_scale


class ResidualBlockBN(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip (Fig. 4, "B residual blocks")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """9x9 conv + PReLU, ``n_blocks`` BN residual blocks, conv3x3 + BN with an element-wise sum skip,
    sub-pixel upsampling with PReLU, 9x9 output conv (Fig. 4, top)."""

    def __init__(self, scale: int = 4, n_blocks: int = 16, n_feats: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlockBN(n_feats) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.BatchNorm2d(n_feats))
        self.upsample = PixelShuffleUpsampler(scale, n_feats, act=nn.PReLU)
        self.conv_last = nn.Conv2d(n_feats, 3, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), nominally in [0, 1] (not clamped)."""
        x = self.head(x)
        x = x + self.body_tail(self.body(x))
        return self.conv_last(self.upsample(x))


@register_model
def srresnet(scale: int = 4, **kwargs) -> SRResNet:
    """SRResNet: 16 residual blocks, 64 channels (1.55M parameters at x4)."""
    return SRResNet(check_scale(scale, "srresnet"), **kwargs)
