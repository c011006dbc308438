"""The SR tables' "Bicubic" row as a model: MATLAB-compatible ``imresize`` of each uint8 LR image.

Every SR paper reports it as the baseline; ``create_model("bicubic", scale=4)`` lets the same evaluation code
that measures trained networks reproduce the published bicubic figures.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from raykd.data.degrade import imresize
from raykd.models.registry import register_model


class MatlabBicubic(nn.Module):
    """(B, 3, h, w) RGB in [0, 1] -> (B, 3, sh, sw): quantised to uint8, resized as MATLAB does, back to [0, 1]."""

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = np.rint(x.detach().cpu().permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)
        out = np.stack([imresize(img, self.scale) for img in images])
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255.0).to(x.device)


@register_model
def bicubic(scale: int = 4, **kw) -> MatlabBicubic:
    return MatlabBicubic(scale, **kw)
