"""SRVM-Net, the student of ViMD (Chen et al., "Vision Mamba Distillation for Low-resolution Fine-grained Image
Classification", IEEE SPL 2025, arXiv:2411.17980, Sec. II-A and Fig. 1).

An x4 super-resolution sub-network (SRGAN's generator, SRResNet) turns the low-resolution image (56 x 56 for the
paper's 224 x 224 HR) into a super-resolved one, which a Vision Mamba classifier (Vim-Ti) labels. The teacher,
HRVM-Net, is the same Vim on the HR image: use ``vim_tiny`` directly.

The paper plugs in a *pre-trained* SR generator; the authors' code (boa2004plaust/ViMD, ``vimd/train_student.py``
and ``vim/engine.py``) loads an ImageNet-trained SRResNet, keeps it in eval mode and gives the optimizer only the
classifier's parameters, i.e. the SR sub-network is frozen while the student learns. Here ``freeze_sr`` defaults
to exactly that whenever ``sr_checkpoint`` is given; without pre-trained weights the SR sub-network is trained
jointly with the classifier (a frozen random SR net would only destroy the input), and ``freeze_sr=False`` with
a checkpoint fine-tunes it end to end.

Inputs are ImageNet-normalised like every raykd classifier input, while SR networks work on RGB in [0, 1]; the
SR sub-network therefore sees the un-normalised image and its output is normalised again for the Vim.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from raykd.models.build import build_model
from raykd.models.registry import register_model
from raykd.models.vim import VisionMamba, vim_micro, vim_tiny

__all__ = ["SR_ARCHS", "SRVMNet", "srvm_micro", "srvm_tiny"]

# SR sub-networks SRVM-Net can use, and the key map their released weights load through: SRGAN's SRResNet
# (raykd's own names) or BasicSR's MSRResNet (msrresnet_x4-style files).
SR_ARCHS = {"srresnet": None, "msrresnet": "basicsr_msrresnet"}


class SRVMNet(nn.Module):
    """``classifier(normalise(sr(unnormalise(x))))``: LR ImageNet-normalised input ``(B, 3, h, w)``, logits out.

    ``sr`` must map ``(B, 3, h, w)`` in [0, 1] to ``(B, 3, s*h, s*w)``; ``s*h`` and ``s*w`` must be multiples of
    the classifier's patch size. With ``freeze_sr`` the SR sub-network has no trainable parameters and stays in
    eval mode (its BatchNorm statistics are those it was pre-trained with), as in the paper's training.
    """

    def __init__(self, sr: nn.Module, classifier: VisionMamba, *, freeze_sr: bool = False) -> None:
        super().__init__()
        self.sr = sr
        self.classifier = classifier
        self.freeze_sr = freeze_sr
        self.num_classes = classifier.num_classes
        self.num_features = classifier.num_features
        # not persistent: constants of the input convention, not weights
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        if freeze_sr:
            self.sr.requires_grad_(False)
            self.sr.eval()

    def train(self, mode: bool = True) -> SRVMNet:
        super().train(mode)
        if self.freeze_sr:
            self.sr.eval()
        return self

    def super_resolve(self, x: Tensor) -> Tensor:
        """The super-resolved image, ImageNet-normalised like the input: ``(B, 3, s*h, s*w)``."""
        rgb = x * self.std + self.mean
        return (self.sr(rgb) - self.mean) / self.std

    def get_classifier(self) -> nn.Module:
        return self.classifier.get_classifier()

    def no_weight_decay(self) -> set[str]:
        return {f"classifier.{name}" for name in self.classifier.no_weight_decay()}

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.super_resolve(x))

    def extract(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """One forward returning the logits under ``"output"`` (raykd.models.features protocol) and the requested
        outputs:
        ``"sr"``, the super-resolved image (ImageNet-normalised, ``(B, 3, s*h, s*w)``), and everything
        :meth:`VisionMamba.extract` provides (``"penultimate"``, batch-first ``"hidden"`` ``(B, depth, L, D)``,
        ``"stage:<k>"``), computed on that image."""
        image = self.super_resolve(x)
        out = self.classifier.extract(image, [n for n in names if n != "sr"])
        if "sr" in names:
            out["sr"] = image
        return out


def _srvm(sr_defaults: dict[str, Any], vim_fn: Callable[..., VisionMamba], num_classes: int, scale: int,
          sr_arch: str, sr_checkpoint: str | os.PathLike | None, freeze_sr: bool | None,
          sr_kwargs: dict[str, Any] | None, vim_kwargs: dict[str, Any]) -> SRVMNet:
    if sr_arch not in SR_ARCHS:
        raise ValueError(f"sr_arch={sr_arch!r} is not an SR sub-network SRVM-Net supports; use one of {list(SR_ARCHS)}")
    sr = build_model(sr_arch, {**sr_defaults, **(sr_kwargs or {}), "scale": scale}, sr_checkpoint,
                     keymap=SR_ARCHS[sr_arch])
    if freeze_sr is None:
        freeze_sr = sr_checkpoint is not None
    elif freeze_sr and sr_checkpoint is None:
        raise ValueError("freeze_sr=True without sr_checkpoint would freeze a randomly initialised SR sub-network; "
                         "pass sr_checkpoint=<pre-trained SR weights>")
    return SRVMNet(sr, vim_fn(num_classes=num_classes, **vim_kwargs), freeze_sr=freeze_sr)


@register_model
def srvm_tiny(num_classes: int = 1000, *, scale: int = 4, sr_arch: str = "srresnet",
              sr_checkpoint: str | os.PathLike | None = None, freeze_sr: bool | None = None,
              sr_kwargs: dict[str, Any] | None = None, **vim_kwargs) -> SRVMNet:
    """SRVM-Net as in the paper: an x4 SRResNet (16 blocks, 64 channels) + Vim-Ti.

    ``sr_arch``: ``"srresnet"`` (SRGAN's network, BatchNorm) or ``"msrresnet"`` (BasicSR's, whose released
    ``msrresnet_x4`` weights load through the ``basicsr_msrresnet`` key map). ``sr_checkpoint``: pre-trained
    weights for it (raykd checkpoint directory, ``.safetensors`` or torch file; see
    :func:`raykd.models.weights.load_weights`). ``freeze_sr``: default frozen exactly when ``sr_checkpoint`` is
    given (the paper's protocol). ``sr_kwargs`` go to the SR model, the remaining keyword arguments to
    :func:`vim_tiny` (``img_size`` there is the *super-resolved* size, 224 for 56 x 56 inputs).
    """
    return _srvm({}, vim_tiny, num_classes, scale, sr_arch, sr_checkpoint, freeze_sr, sr_kwargs, vim_kwargs)


@register_model
def srvm_micro(num_classes: int = 1000, *, scale: int = 4, sr_arch: str = "srresnet",
               sr_checkpoint: str | os.PathLike | None = None, freeze_sr: bool | None = None,
               sr_kwargs: dict[str, Any] | None = None, **vim_kwargs) -> SRVMNet:
    """Not from the paper: a 2-block, 16-channel SR sub-network + ``vim_micro``, for CPU tests and smoke runs (its
    hidden states match a ``vim_micro`` teacher's). Arguments as :func:`srvm_tiny`."""
    return _srvm({"n_blocks": 2, "n_feats": 16}, vim_micro, num_classes, scale, sr_arch, sr_checkpoint, freeze_sr,
                 sr_kwargs, vim_kwargs)
