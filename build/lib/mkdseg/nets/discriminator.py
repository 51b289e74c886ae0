"""PatchGAN discriminator (Isola et al. 2017): with 3 layers each output sees a 70x70 input patch."""

from __future__ import annotations

import torch
from torch import nn

from mkdseg.nets.layers import Norm, norm_layer


class NLayerDiscriminator(nn.Module):
    """``[B, in_channels, H, W] -> [B, 1, H', W']`` real/fake logits, one per overlapping patch.

    Example:
        >>> d = NLayerDiscriminator(ndf=8)
        >>> d(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 6, 6])
    """

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3, norm: Norm = "instance"):
        super().__init__()
        if ndf < 1 or n_layers < 1:
            raise ValueError(f"invalid discriminator size: ndf={ndf}, n_layers={n_layers}")
        bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last layer keeps resolution, as in pix2pix
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
