"""What the CIFAR zoo's families share: the timm-style head, the reference initialisation, channel shuffle, and
registering a family's variants from a table of sizes."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models.registry import register_model

__all__ = ["CifarNet", "init_weights", "channel_shuffle", "register_variants"]


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions and identity BatchNorm, the initialisation of the reference zoo."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel shuffle (Zhang et al., ShuffleNet, CVPR 2018, sec. 3.1): (B, g*n, H, W) -> interleave groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class CifarNet(nn.Module):
    """timm-style head shared by the zoo: global average pool, flatten, linear classifier (at ``classifier_name``,
    the module path the reference checkpoints use). ``forward_features`` is the zoo's usual body, which a family
    with another one overrides: the stem ``ReLU(BN(conv1(x)))`` (modules ``conv1``, ``bn1``), then every stage of
    ``stage_names`` in order."""

    stage_names: tuple[str, ...]
    num_features: int
    classifier_name: ClassVar[str] = "fc"

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def register_variants(family: Callable[..., nn.Module], variants: Mapping[str, Mapping[str, Any]],
                      docs: Mapping[str, str] | None = None) -> None:
    """Register one model per row of ``variants``, ``{registry name: the family's size arguments}``: the model
    ``name(num_classes=100, **kw)`` is ``family(num_classes=num_classes, **sizes, **kw)``. ``docs``: a row's
    docstring, where it has more to say than its sizes."""
    for name, sizes in variants.items():
        register_model(_factory(family, name, dict(sizes), (docs or {}).get(name)), name=name)


def _factory(family: Callable[..., nn.Module], name: str, sizes: dict[str, Any], doc: str | None
             ) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 100, **kw: Any) -> nn.Module:
        return family(num_classes=num_classes, **{**sizes, **kw})

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = getattr(family, "__module__", __name__)
    factory.__doc__ = doc or f"{getattr(family, '__name__', family)}({', '.join(f'{k}={v}' for k, v in sizes.items())})"
    return factory
