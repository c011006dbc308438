"""DVMSR: Distillated Vision Mamba for Efficient Super-Resolution (Lei, Zhang & Cao, CVPRW 2024).

Sec. 3.1 / Fig. 2: a 3x3 conv extracts shallow features ``F_0``; stacked Residual State Space Blocks (RSSB:
several Vision Mamba Modules (ViMM), a 3x3 conv and a residual) and a 3x3 conv extract deep features, which
are added to ``F_0`` (global residual); a pixel-shuffle module reconstructs the image. A ViMM is LayerNorm, then
a unidirectional Mamba mixer over the row-major flattened image (in-projection to ``x`` and ``z``, causal
depthwise conv1d, SiLU, selective scan, gating by SiLU(``z``), out-projection), then a residual.

Facts not in the paper follow the official code (github.com/nathan66666/DVMSR, ``models/team07_VimSR.py``,
``VimSR()``): Mamba's defaults d_state 16, d_conv 4, expand 2 and no MLP; a LayerNorm on the tokens after the
shallow conv (``patch_embed.norm``) and one after the last RSSB (``norm_f``); the DIV2K mean removed at the
input and added back at the output; the "pixelshuffledirect" upsampler for the student (one conv to
``3 * scale**2`` channels and a PixelShuffle). Parameter names match it, so the released ``DVMSR.pth`` loads
strictly with :func:`raykd.models.weights.load_weights`.

Two variants, which the state dict cannot tell apart (same keys and shapes), selected by ``vimm_residual``:

- ``vimm_residual=False`` (``dvmsr``, ``dvmsr_teacher``): the network of the released code and weights, the
  one that produced the published numbers. Its stack calls each block as ``blk(x, x_size)``, which passes the
  image size where mamba_ssm's block takes the residual, so every ViMM returns ``Mamba(LayerNorm(x))`` alone
  (see :class:`raykd.models.ssm.MambaBlock`). The released ``DVMSR.pth`` gives Set5 x4 32.19 dB / 0.8940 with
  MATLAB-rounded Y (Table 1: 32.19 / 0.8955).
- ``vimm_residual=True`` (``dvmsr_paper``): each ViMM adds its input back, as Fig. 2 and Sec. 3.1 describe.

A checkpoint must therefore record ``vimm_residual`` (with the other constructor arguments) for a loader to
rebuild the right variant; :attr:`DVMSR.variant` holds the arguments the weights cannot reveal.

Input and output are RGB in [0, 1], any height and width (the output is not clamped).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from raykd.models.features import layer_index
from raykd.models.ops import Backend
from raykd.models.registry import register_model
from raykd.models.sr_common import DIV2K_RGB_MEAN, ResidualGroupConv, check_scale, to_image
from raykd.models.ssm import Mamba, MambaBlock
from raykd.models.swinir import SwinReconstruction, stage_drop_paths

__all__ = ["DVMSR", "dvmsr", "dvmsr_paper", "dvmsr_teacher"]


class ViMMStack(nn.Module):
    """The ViMMs of one RSSB in order (``blocks``, the official key path ``residual_group.blocks.<j>``)."""

    def __init__(self, blocks: Sequence[MambaBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class DVMSR(SwinReconstruction):
    """DVMSR network: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``.

    ``upsampler`` is ``"pixelshuffledirect"`` (the student's) or ``"pixelshuffle"`` (conv + LeakyReLU to 64
    channels, pixel-shuffle stages, output conv: the classical upsampler of the official code and SwinIR, which
    gives the teacher the 7.432M parameters of Table 8). ``bidirectional`` scans every ViMM both ways with the
    bidirectional Mamba mixer (Table 6's bidirectional SSM: 0.4849M parameters for the student).
    """

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
        vimm_residual: bool = False,
        bidirectional: bool = False,
        upsampler: str = "pixelshuffledirect",
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.scale = scale
        self.img_range = img_range
        self.vimm_residual = vimm_residual
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self._build_shallow(3, embed_dim)
        # The release's VimSR() defaults to drop_path_rate=0.1; its training configuration is not published.
        self.layers = nn.ModuleList(
            ResidualGroupConv(embed_dim, ViMMStack([
                MambaBlock(
                    embed_dim, Mamba(embed_dim, d_state, d_conv, expand, bidirectional=bidirectional, backend=backend),
                    norm="layer", drop_path=rate, residual=vimm_residual,
                )
                for rate in rates
            ]))
            for rates in stage_drop_paths(depths, drop_path_rate)
        )
        self.norm_f = nn.LayerNorm(embed_dim)
        self._build_reconstruction(embed_dim, scale, upsampler)
        # Official init: truncated-normal (0.02) Linear weights and zero biases, unit LayerNorms. Mamba's dt_proj
        # keeps its own step-size init (the official blanket init also overwrote it, zeroing the dt bias).
        for name, module in self.named_modules():
            if not name.rsplit(".", 1)[-1].startswith("dt_proj"):
                self._init_weights(module)

    @property
    def variant(self) -> dict[str, bool]:
        """Constructor arguments the state dict cannot reveal; a checkpoint must carry them (module docstring)."""
        return {"vimm_residual": self.vimm_residual}

    def no_weight_decay(self) -> set[str]:
        """The SSM parameters A_log and D, which Mamba trains without weight decay."""
        names = ("A_log", "A_b_log", "D", "D_b")
        return {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in names}

    def _run(self, x: Tensor, keep_stages: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(output, features entering the upsampler, outputs of every RSSB as images if asked)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DVMSR: input of shape {tuple(x.shape)}; expected (N, 3, H, W) RGB")
        shallow = self.conv_first((x - self.mean.to(x.dtype)) * self.img_range)
        size = (shallow.shape[2], shallow.shape[3])
        tokens = self.patch_embed(shallow)
        stages = []
        for layer in self.layers:
            tokens = layer(tokens, size)
            if keep_stages:
                stages.append(to_image(tokens, size))
        body = self.conv_after_body(to_image(self.norm_f(tokens), size)) + shallow
        out = self._reconstruct(body) / self.img_range + self.mean.to(x.dtype)
        return out, body, stages

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, keep_stages=False)[0]

    def extract(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """One forward returning the SR image under ``"output"`` (raykd.models.features protocol) and the
        requested outputs:

        - ``"body"``: the deep features plus the global residual, the upsampler's input ``(N, C, H, W)``;
        - ``"feat:<k>"``: the output of RSSB ``k`` (Python indexing), ``(N, C, H, W)``.
        """
        stages = {}
        for name in names:
            if name.startswith("feat:"):
                stages[name] = layer_index(name, "feat", len(self.layers), "DVMSR.extract")
            elif name != "body":
                raise ValueError(f"unknown output {name!r}; DVMSR.extract provides 'body' and 'feat:<k>' besides "
                                 "its output")
        out, body, feats = self._run(x, keep_stages=bool(stages))
        result = {"output": out}
        if "body" in names:
            result["body"] = body
        result.update({name: feats[k] for name, k in stages.items()})
        return result


@register_model
def dvmsr(scale: int = 4, **kwargs) -> DVMSR:
    """DVMSR student as released (Sec. 4.1): 4 RSSB x 2 ViMM, 60 channels, pixel-shuffle-direct, ViMMs without
    residual (``vimm_residual=False``, the network behind Table 1); 0.424M parameters at x4 (Table 1)."""
    return DVMSR(check_scale(scale, "dvmsr"), **{"embed_dim": 60, "depths": (2, 2, 2, 2), **kwargs})


@register_model
def dvmsr_paper(scale: int = 4, **kwargs) -> DVMSR:
    """The student as the paper describes it (Fig. 2, Sec. 3.1): ``dvmsr`` with a residual around every ViMM
    (``vimm_residual=True``); same parameters, no released weights."""
    return dvmsr(check_scale(scale, "dvmsr_paper"), **{"vimm_residual": True, **kwargs})


@register_model
def dvmsr_teacher(scale: int = 4, **kwargs) -> DVMSR:
    """DVMSR teacher (Sec. 4.1): 8 RSSB x 2 ViMM, 192 channels, the classical pixel-shuffle upsampler (64
    channels); 7.432M parameters at x4 (Table 8). ViMMs as in the release (``vimm_residual=False``)."""
    config = {"embed_dim": 192, "depths": (2,) * 8, "upsampler": "pixelshuffle"}
    return DVMSR(check_scale(scale, "dvmsr_teacher"), **{**config, **kwargs})
