"""Vision Mamba (Vim; Zhu et al., "Vision Mamba: Efficient Visual Representation Learning with Bidirectional
State Space Model", ICML 2024).

Sec. 3.2 / Fig. 2 / eq. (5), as in the official ``vim_*_patch16_224_bimambav2_..._midclstok_div2`` models:
a 16x16 patch embedding, a class token inserted in the middle of the patch sequence, an absolute position
embedding, ``depth`` Vim layers (RMSNorm, then the bidirectional "v2" Mamba mixer of Alg. 1, residual), a final
RMSNorm and a linear head on the class token. Parameter names follow the official code (hustvl/Vim,
``vim/models_mamba.py``), so its ImageNet checkpoints load strictly with
``raykd.models.weights.load_weights(model, path, keymap="hustvl_vim")``; ``exclude=("head",)`` leaves out the
1000-class head to start a classifier for other classes from them.

The official layers use Mamba's fused add-norm, ``hidden, residual = norm(residual + hidden)`` with the
residual kept in float32; unrolled over the stack that is the pre-norm chain ``x_i = x_{i-1} +
drop_path(mixer_i(norm_i(x_{i-1})))`` on a float32 stream, followed by ``norm_f(x_N)``, which is how it is
written here. The hidden state of layer ``i`` (what ViMD distils) is ``x_i``, the residual stream after it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, lecun_normal_, trunc_normal_
from torch import Tensor

from raykd.models.features import layer_index
from raykd.models.registry import register_model
from raykd.models.ops import Backend
from raykd.models.ssm import Mamba, MambaBlock
from raykd.models.weights import register_keymap, same_names

__all__ = ["VisionMamba", "vim_micro", "vim_small", "vim_tiny"]


class VisionMamba(nn.Module):
    """Vim classifier. Input ``(B, in_chans, H, W)`` with ``H``, ``W`` multiples of ``patch_size``; logits out.

    The position embedding is learnt for ``img_size``; other input sizes use it resized bicubically over the
    patch grid (the class token's entry is kept as is), as Vim's fine-tuning at other resolutions does.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.residual_in_fp32 = residual_in_fp32
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # The official stack applies layer i's rate to layer i-1's output (and the full rate to the last one);
        # in pre-norm form that is rate i on mixer i's output.
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.layers = nn.ModuleList(
            MambaBlock(embed_dim, Mamba(embed_dim, d_state, d_conv, expand, bidirectional=True, backend=backend),
                       norm="rms", norm_eps=norm_eps, drop_path=rate)
            for rate in rates
        )
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Vim's initialisation: LeCun-normal patch conv, truncated-normal (0.02) position embedding, class
        token and head, and out_proj scaled by 1/sqrt(depth) (GPT-2 residual rescaling, as in Mamba). The mixers
        bring Mamba's own dt / A / D initialisation."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight /= math.sqrt(depth)

    def get_classifier(self) -> nn.Module:
        return self.head

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay in Vim: embeddings and the SSM's A_log / D."""
        ssm = {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in ("A_log", "A_b_log", "D", "D_b")}
        return {"pos_embed", "cls_token"} | ssm

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        """Position embedding for a ``grid`` of patches, class token in the middle."""
        old = tuple(self.patch_embed.grid_size)
        if grid == old:
            return self.pos_embed
        mid = old[0] * old[1] // 2
        cls = self.pos_embed[:, mid : mid + 1]
        patches = torch.cat([self.pos_embed[:, :mid], self.pos_embed[:, mid + 1 :]], dim=1)
        patches = patches.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False)
        patches = patches.to(self.pos_embed.dtype).flatten(2).transpose(1, 2)
        new_mid = grid[0] * grid[1] // 2
        return torch.cat([patches[:, :new_mid], cls, patches[:, new_mid:]], dim=1)

    def _encode(self, x: Tensor, keep_hidden: bool) -> tuple[Tensor, list[Tensor]]:
        """Final-normed tokens ``(B, L, D)`` (class token at ``(L - 1) // 2``) and, if asked, every layer's
        residual stream."""
        patch = self.patch_embed.patch_size
        if x.dim() != 4 or x.shape[-2] % patch[0] or x.shape[-1] % patch[1]:
            raise ValueError(
                f"VisionMamba: input of shape {tuple(x.shape)}; expected (B, C, H, W) with H and W "
                f"multiples of the patch size {patch[0]}"
            )
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
        x = self.patch_embed(x)
        mid = x.shape[1] // 2
        x = torch.cat([x[:, :mid], self.cls_token.expand(x.shape[0], -1, -1), x[:, mid:]], dim=1)
        x = self.pos_drop(x + self._pos_embed(grid))
        stream = x.float() if self.residual_in_fp32 else x
        hidden = []
        for layer in self.layers:
            stream = layer(stream)
            if keep_hidden:
                hidden.append(stream)
        return self.norm_f(stream.to(self.norm_f.weight.dtype)), hidden

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens after the final norm, ``(B, num_patches + 1, embed_dim)``."""
        return self._encode(x, keep_hidden=False)[0]

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        cls = tokens[:, (tokens.shape[1] - 1) // 2]
        return cls if pre_logits else self.head(cls)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def extract(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """One forward returning the logits under ``"output"`` (raykd.models.features protocol) and the requested
        outputs:

        - ``"penultimate"``: the class token after the final norm, ``(B, embed_dim)``;
        - ``"hidden"``: the residual stream after every layer, stacked batch-first ``(B, depth, num_patches + 1,
          embed_dim)`` (float32 with ``residual_in_fp32``), the per-layer hidden states ViMD matches. Batch-first
          like every named output, so the teacher cache stores one ``(depth, L, D)`` row per sample and live and
          cached teachers serve the same layout;
        - ``"stage:<k>"``: the residual stream after layer ``k`` (Python indexing), ``(B, L, embed_dim)``.
        """
        layers = {}
        for name in names:
            if name.startswith("stage:"):
                layers[name] = layer_index(name, "stage", len(self.layers), "VisionMamba.extract")
            elif name not in ("penultimate", "hidden"):
                raise ValueError(f"unknown output {name!r}; VisionMamba.extract provides 'penultimate', 'hidden' "
                                 "and 'stage:<k>' besides its logits")
        tokens, hidden = self._encode(x, keep_hidden="hidden" in names or bool(layers))
        pre = self.forward_head(tokens, pre_logits=True)
        out = {"output": self.head(pre)}
        if "penultimate" in names:
            out["penultimate"] = pre
        if "hidden" in names:
            out["hidden"] = torch.stack(hidden, dim=1)
        out.update({name: hidden[k] for name, k in layers.items()})
        return out


register_keymap("hustvl_vim", (VisionMamba,), "vim_tiny")(same_names)


def _vim(defaults: dict, kwargs: dict) -> VisionMamba:
    return VisionMamba(**{**defaults, **kwargs})


@register_model
def vim_tiny(**kwargs) -> VisionMamba:
    """Vim-Ti (Table 1): patch 16, dim 192, 24 layers, d_state 16, expand 2; 7.15M parameters at 1000 classes."""
    return _vim({"patch_size": 16, "embed_dim": 192, "depth": 24, "d_state": 16, "expand": 2}, kwargs)


@register_model
def vim_small(**kwargs) -> VisionMamba:
    """Vim-S (Table 1): patch 16, dim 384, 24 layers, d_state 16, expand 2; 25.8M parameters at 1000 classes."""
    return _vim({"patch_size": 16, "embed_dim": 384, "depth": 24, "d_state": 16, "expand": 2}, kwargs)


@register_model
def vim_micro(**kwargs) -> VisionMamba:
    """Not from the paper: a 4-layer, dim-48 Vim for CPU tests and smoke runs of the Vim-based methods."""
    return _vim({"patch_size": 16, "embed_dim": 48, "depth": 4, "d_state": 16, "expand": 2}, kwargs)
