"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution (Lim et al., CVPRW 2017).

Module names follow the official EDSR-PyTorch code (``sub_mean``, ``head.0``, ``body.N.body.{0,2}``,
``body.<n_resblocks>``, ``tail.0.*``, ``tail.1``, ``add_mean``), so its released ``edsr_x{2,3,4}`` and
``edsr_baseline_x{2,3,4}`` files load with :func:`raykd.models.sr_common.load_official`.

Input and output are RGB in [0, 1]; the network itself runs in [0, ``rgb_range``] (255 in the official
models) and the rescaling happens inside ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from raykd.models.registry import register_model
from raykd.models.sr_common import MeanShiftedSR, check_scale, conv3x3


class ResBlock(nn.Module):
    """conv-ReLU-conv residual block without batch norm, output scaled by ``res_scale`` (EDSR Sec. 3.1, Fig. 2c).

    The residual scaling (0.1 in the 256-channel model) keeps training of the wide model stable.
    """

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(MeanShiftedSR):
    """EDSR single-scale network (Fig. 3): head conv, ``n_resblocks`` residual blocks + conv with a global skip,
    sub-pixel upsampler, output conv; DIV2K mean removed before and added back after."""

    def __init__(
        self,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__(scale, n_feats, rgb_range, lambda: [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)])

    @property
    def stage_names(self) -> tuple[str, str, str]:
        """Three points of the body (``stage:0..2``, :mod:`raykd.models.features`): the ends of its first and
        second thirds of blocks (``n // 3`` and ``2n // 3`` blocks in) and its last conv, before the long skip.

        The feature maps 1-3 of FAKD's released EDSR (its ``body1``/``body2``/``body3`` split, the ``--features
        [1,2,3]`` default; github.com/Vincent-Hoo/Knowledge-Distillation-for-Super-resolution). An empty third
        (fewer than 3 blocks) points at the previous point, the head conv for the first. That code's third map is
        taken after its in-place ``res += x``, i.e. with the long skip added; here it is the body's own output.
        """
        blocks = len(self.body) - 1
        first, second = blocks // 3, 2 * blocks // 3
        return (f"body.{first - 1}" if first else "head.0", f"body.{second - 1}" if second else "head.0",
                f"body.{blocks}")


@register_model
def edsr(scale: int = 4, **kwargs) -> EDSR:
    """EDSR (Table 1): 32 blocks, 256 channels, residual scaling 0.1; 43.1M parameters at x4."""
    return EDSR(check_scale(scale, "edsr"), **{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **kwargs})


@register_model
def edsr_baseline(scale: int = 4, **kwargs) -> EDSR:
    """EDSR baseline (Table 1): 16 blocks, 64 channels, no residual scaling; 1.5M parameters at x4."""
    return EDSR(check_scale(scale, "edsr_baseline"), **{"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, **kwargs})
