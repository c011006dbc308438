"""DVMSR: Distillated Vision Mamba for Efficient Super-Resolution (Lei, Zhang & Cao, CVPRW 2024).

Sec. 3.1 / Fig. 2: a 3x3 conv extracts shallow features ``F_0``; stacked Residual State Space Blocks (RSSB:
several Vision Mamba Modules (ViMM), a 3x3 conv and a residual) and a 3x3 conv extract deep features, which
are added to ``F_0`` (global residual); a 3x3 conv and a pixel shuffle reconstruct the image. A ViMM is
LayerNorm, then a unidirectional Mamba mixer over the row-major flattened image (in-projection to ``x`` and
``z``, causal depthwise conv1d, SiLU, selective scan, gating by SiLU(``z``), out-projection), then a residual.

Facts not in the paper follow the official code (github.com/nathan66666/DVMSR, ``models/team07_VimSR.py``,
``VimSR()``): Mamba's defaults d_state 16, d_conv 4, expand 2 and no MLP; a LayerNorm on the tokens after the
shallow conv (``patch_embed.norm``) and one after the last RSSB (``norm_f``); the DIV2K mean removed at the
input and added back at the output; the "pixelshuffledirect" upsampler (one conv to ``3 * scale**2`` channels
and a PixelShuffle). Parameter names match it, so its released ``DVMSR.pth`` loads with
:func:`raykd.models.sr_common.load_official`. One difference: the official stack calls each block as
``blk(x, x_size)``, which passes the size where the residual belongs, so its ViMMs run without their residual;
here each ViMM has the residual the paper describes. ``vimm_residual=False`` reproduces the official network
(the released weights were trained that way); the parameter count is the same either way.

Input and output are RGB in [0, 1], any height and width (the output is not clamped).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from torch import Tensor

from raykd.models.features import layer_index
from raykd.models.registry import register_model
from raykd.models.sr_common import DIV2K_RGB_MEAN, check_scale
from raykd.models.ssm import Backend, Mamba

__all__ = ["DVMSR", "RSSB", "ViMM", "dvmsr", "dvmsr_teacher"]


def _to_image(tokens: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, H*W, C)`` row-major tokens -> ``(B, C, H, W)``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


def _to_tokens(image: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``, scanning rows top to bottom, each left to right."""
    return image.flatten(2).transpose(1, 2)


class ViMM(nn.Module):
    """Vision Mamba Module (Fig. 2): ``x + drop_path(Mamba(LayerNorm(x)))`` on ``(B, L, C)`` tokens."""

    def __init__(
        self, dim: int, d_state: int, d_conv: int, expand: int, drop_path: float, residual: bool, backend: Backend
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = Mamba(dim, d_state, d_conv, expand, backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.drop_path(self.mixer(self.norm(x)))
        return x + y if self.residual else y


class ViMMStack(nn.Module):
    """The ViMMs of one RSSB in order (``blocks``, the official key path ``residual_group.blocks.<j>``)."""

    def __init__(self, blocks: Sequence[ViMM]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RSSB(nn.Module):
    """Residual State Space Block (Fig. 2): ViMMs on the tokens, a 3x3 conv on the image, plus the input."""

    def __init__(self, dim: int, blocks: Sequence[ViMM]) -> None:
        super().__init__()
        self.residual_group = ViMMStack(blocks)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return _to_tokens(self.conv(_to_image(self.residual_group(x), size))) + x


class TokenEmbed(nn.Module):
    """Image to row-major tokens with a LayerNorm (the official ``patch_embed`` with patch size 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor) -> Tensor:
        return self.norm(_to_tokens(image))


class DVMSR(nn.Module):
    """DVMSR network: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``."""

    def __init__(
        self,
        scale: int = 4,
        embed_dim: int = 60,
        depths: Sequence[int] = (2, 2, 2, 2),
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        drop_path_rate: float = 0.0,
        img_range: float = 1.0,
        vimm_residual: bool = True,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.scale = scale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_embed = TokenEmbed(embed_dim)
        rates = iter(torch.linspace(0, drop_path_rate, sum(depths)).tolist())
        self.layers = nn.ModuleList(
            RSSB(embed_dim, [ViMM(embed_dim, d_state, d_conv, expand, next(rates), vimm_residual, backend)
                             for _ in range(depth)])
            for depth in depths
        )
        self.norm_f = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        # Official init: truncated-normal (0.02) Linear weights, zero biases. Mamba's dt_proj keeps its own
        # step-size init (the official blanket init also overwrote it, zeroing the dt bias).
        for module in self.modules():
            if isinstance(module, Mamba):
                for linear in (module.in_proj, module.x_proj, module.out_proj):
                    trunc_normal_(linear.weight, std=0.02)
                    if linear.bias is not None:
                        nn.init.zeros_(linear.bias)

    def no_weight_decay(self) -> set[str]:
        """The SSM parameters A_log and D, which Mamba trains without weight decay."""
        return {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in ("A_log", "D")}

    def _run(self, x: Tensor, keep_stages: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(output, features entering the upsampler, outputs of every RSSB as images if asked)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"raykd/models/dvmsr.py: input of shape {tuple(x.shape)}; expected (N, 3, H, W) RGB")
        shallow = self.conv_first((x - self.mean.to(x.dtype)) * self.img_range)
        size = (shallow.shape[2], shallow.shape[3])
        tokens = self.patch_embed(shallow)
        stages = []
        for layer in self.layers:
            tokens = layer(tokens, size)
            if keep_stages:
                stages.append(_to_image(tokens, size))
        body = self.conv_after_body(_to_image(self.norm_f(tokens), size)) + shallow
        out = self.upsample(body) / self.img_range + self.mean.to(x.dtype)
        return out, body, stages

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, keep_stages=False)[0]

    def extract(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """One forward returning the requested outputs (raykd.models.features protocol):

        - ``"output"`` (also under ``"logits"``, the protocol's name for the model's own output): the SR image;
        - ``"body"``: the deep features plus the global residual, the upsampler's input ``(N, C, H, W)``;
        - ``"feat:<k>"``: the output of RSSB ``k`` (Python indexing), ``(N, C, H, W)``.
        """
        stages = {}
        for name in names:
            if name.startswith("feat:"):
                stages[name] = layer_index(name, "feat", len(self.layers), "raykd/models/dvmsr.py")
            elif name not in ("output", "logits", "body"):
                raise ValueError(
                    f"raykd/models/dvmsr.py: unknown output {name!r}; DVMSR.extract provides 'output' (alias "
                    "'logits'), 'body' and 'feat:<k>'"
                )
        out, body, feats = self._run(x, keep_stages=bool(stages))
        result = {"logits": out}
        if "output" in names:
            result["output"] = out
        if "body" in names:
            result["body"] = body
        result.update({name: feats[k] for name, k in stages.items()})
        return result


@register_model
def dvmsr(scale: int = 4, **kwargs) -> DVMSR:
    """DVMSR student (Sec. 4.1): 4 RSSB x 2 ViMM, 60 channels, pixel-shuffle-direct; 0.424M parameters at x4."""
    return DVMSR(check_scale(scale, "dvmsr"), **{"embed_dim": 60, "depths": (2, 2, 2, 2), **kwargs})


@register_model
def dvmsr_teacher(scale: int = 4, **kwargs) -> DVMSR:
    """DVMSR teacher (Sec. 4.1): 8 RSSB x 2 ViMM, 192 channels, pixel-shuffle-direct."""
    return DVMSR(check_scale(scale, "dvmsr_teacher"), **{"embed_dim": 192, "depths": (2,) * 8, **kwargs})
