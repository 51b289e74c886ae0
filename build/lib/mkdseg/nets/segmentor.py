"""The segmentor: a 2D U-Net with residual units (MONAI's UNet)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn


def unet_size_divisor(channels: Sequence[int], strides: Sequence[int], min_levels: int = 2, network: str = "segmentor") -> int:
    """What the height and width a U-Net takes must be divisible by: the product of its ``strides``.
    ``ValueError`` unless it has at least ``min_levels`` levels (``channels``) and a stride between each two.

    >>> unet_size_divisor((8, 16, 32), (2, 2))
    4
    """
    if len(channels) < min_levels or len(strides) != len(channels) - 1:
        raise ValueError(f"{network} needs len(channels) >= {min_levels} and len(strides) == len(channels) - 1, "
                         f"got {tuple(channels)} and {tuple(strides)}")
    return math.prod(strides)


class ResidualUNet(nn.Module):
    """``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits.

    H and W must be divisible by the product of ``strides``.

    Example:
        >>> s = ResidualUNet(num_classes=8, channels=(8, 16, 32), strides=(2, 2))
        >>> s(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 8, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 8,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.size_divisor = unet_size_divisor(channels, strides)
        self.num_classes = num_classes
        self.net = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
