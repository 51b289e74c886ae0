"""Small building blocks shared by the architectures."""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

Norm = Literal["instance", "batch", "none"]
NORMS = get_args(Norm)


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """The normalisation layer CycleGAN uses for ``kind`` (instance norm without affine by default)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's 'normal' initialisation: conv weights ~ N(0, gain), norm weights ~ N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module
