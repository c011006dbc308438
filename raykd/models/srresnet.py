"""SRResNet, the generator of SRGAN (Ledig et al., CVPR 2017, Sec. 2.2 and Fig. 4), and BasicSR's MSRResNet.

``srresnet`` is the paper's network (BatchNorm residual blocks, PReLU, 9x9 head and tail). The authors released
no PyTorch weights, so its module names are raykd's own. x4 uses two PixelShuffle(2) stages as in the paper,
x2 one, x3 a single PixelShuffle(3).

``msrresnet`` is BasicSR's "modified SRResNet" (XPixelGroup/BasicSR, ``basicsr/archs/srresnet_arch.py``), the
SRResNet most released weights are for: no BatchNorm, residual blocks conv3x3-ReLU-conv3x3 (EDSR style), 3x3
convolutions throughout, LeakyReLU(0.1), an extra ``conv_hr`` before the output conv, and the bilinearly
upsampled input added to the output. Its module names are BasicSR's, so ``msrresnet_x4``-style checkpoints
(``{"params": ...}``) load strictly with ``load_weights(model, path, keymap="basicsr_msrresnet")``.

Input is RGB in [0, 1] and the output is trained towards RGB in [0, 1] (the SRGAN paper scales HR targets to
[-1, 1]; raykd keeps one range for every SR model, as BasicSR does).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from raykd.models.registry import register_model
from raykd.models.sr_common import PixelShuffleUpsampler, check_scale, conv3x3
from raykd.models.weights import register_keymap, same_names

__all__ = ["MSRResNet", "SRResNet", "msrresnet", "srresnet"]


class ResidualBlockBN(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip (Fig. 4, "B residual blocks")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            conv3x3(channels, channels),
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
        self.body_tail = nn.Sequential(conv3x3(n_feats, n_feats), nn.BatchNorm2d(n_feats))
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


class ResidualBlockNoBN(nn.Module):
    """BasicSR's ``ResidualBlockNoBN`` at ``res_scale=1``: ``x + conv2(relu(conv1(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """BasicSR's MSRResNet: ``conv_first`` + LeakyReLU, ``n_blocks`` residual blocks without BatchNorm (no long
    skip), ``upconv1`` (+ ``upconv2`` at x4) each followed by a pixel shuffle and LeakyReLU, ``conv_hr`` +
    LeakyReLU, ``conv_last``, plus the bilinear upsampling of the input. LeakyReLU slope 0.1 and the
    initialisation (Kaiming-normal scaled by 0.1, zero biases) are BasicSR's."""

    def __init__(self, scale: int = 4, n_blocks: int = 16, n_feats: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.conv_first = conv3x3(3, n_feats)
        self.body = nn.Sequential(*[ResidualBlockNoBN(n_feats) for _ in range(n_blocks)])
        # x4 is two x2 steps; x2 and x3 one step of their own factor
        self.shuffle = 2 if scale == 4 else scale
        self.upconv1 = conv3x3(n_feats, n_feats * self.shuffle**2)
        self.upconv2 = conv3x3(n_feats, n_feats * 4) if scale == 4 else None
        self.conv_hr = conv3x3(n_feats, n_feats)
        self.conv_last = conv3x3(n_feats, 3)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
                module.weight.data.mul_(0.1)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), nominally in [0, 1] (not clamped)."""
        out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        for upconv in (self.upconv1, self.upconv2):
            if upconv is not None:
                out = F.leaky_relu(F.pixel_shuffle(upconv(out), self.shuffle), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


@register_model
def msrresnet(scale: int = 4, **kwargs) -> MSRResNet:
    """BasicSR's MSRResNet: 16 residual blocks without BatchNorm, 64 channels (1.52M parameters at x4)."""
    return MSRResNet(check_scale(scale, "msrresnet"), **kwargs)


register_keymap("basicsr_msrresnet", (MSRResNet,), "msrresnet")(same_names)
