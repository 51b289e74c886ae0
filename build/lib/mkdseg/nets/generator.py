"""CycleGAN ResNet generator (Johnson et al. 2016 as used by Zhu et al. 2017)."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from mkdseg.nets.layers import Norm, norm_layer

Upsampling = Literal["transpose", "resize"]
UPSAMPLING = get_args(Upsampling)


def upsample_x2(in_channels: int, out_channels: int, mode: Upsampling, padding: str, bias: bool) -> list[nn.Module]:
    """Twice the resolution, ``in_channels -> out_channels``; ``mode`` as in :class:`ResnetGenerator`."""
    if mode == "transpose":
        return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode=padding, bias=bias)]


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; reflect padding keeps borders artefact-free."""

    def __init__(self, channels: int, norm: Norm = "instance", padding: str = "reflect", dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding, bias=norm == "instance"),
                norm_layer(norm, channels),
            ]
            if i == 0:
                layers.append(nn.ReLU(inplace=True))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image translator: ``[B, in_channels, H, W] -> [B, out_channels, H, W]`` in [-1, 1].

    7x7 stem, ``n_downsampling`` stride-2 convolutions, ``n_blocks`` residual blocks, as many
    upsampling stages back up, 7x7 head and tanh. H and W must be divisible by ``2**n_downsampling``.

    ``upsampling``: ``transpose`` (CycleGAN's stride-2 transposed convolutions) or ``resize``
    (nearest-neighbour x2, then a 3x3 convolution: Odena et al., Distill 2016). A 3x3 kernel at stride 2
    overlaps unevenly, which paints a chequerboard on flat regions such as blood pools; resizing first
    gives every output pixel the same kernel coverage.

    Example:
        >>> g = ResnetGenerator(ngf=8, n_blocks=2)
        >>> g(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        norm: Norm = "instance",
        padding: str = "reflect",
        dropout: float = 0.0,
        upsampling: Upsampling = "transpose",
    ):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"generator upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
        if ngf < 1 or n_blocks < 0 or n_downsampling < 0:
            raise ValueError(f"invalid generator size: ngf={ngf}, n_blocks={n_blocks}, n_downsampling={n_downsampling}")
        self.size_divisor = 2**n_downsampling
        bias = norm == "instance"  # instance norm has no affine shift to absorb a bias, batch norm does
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ngf, 7, padding=3, padding_mode=padding, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        ch = ngf
        for _ in range(n_downsampling):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias), norm_layer(norm, ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm, padding, dropout) for _ in range(n_blocks)]
        for _ in range(n_downsampling):
            layers += [*upsample_x2(ch, ch // 2, upsampling, padding, bias), norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.Conv2d(ch, out_channels, 7, padding=3, padding_mode=padding), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
