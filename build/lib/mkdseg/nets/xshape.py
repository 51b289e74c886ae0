"""X-shape dual-stream segmentor (Valindria et al., "Multi-modal learning from unpaired images:
application to multi-organ segmentation in CT and MRI", WACV 2018): modality-specific encoders and
decoders around shared middle layers, their best dual-stream variant.

Built from the same blocks, widths and strides as :class:`mkdseg.nets.ResidualUNet` (MONAI's UNet with
residual units): ``channels[i]`` is the width after the ``i``-th down-sampling unit. The deepest
down-sampling unit, the bottom unit and the first up-sampling unit form the shared middle; every
shallower level exists once per stream, with its own skip connections.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from mkdseg.nets.segmentor import unet_size_divisor


class XShapeNet(nn.Module):
    """``forward(x [B, in_channels, H, W], stream) -> [B, num_classes, H, W]`` logits of that stream.

    H and W must be divisible by the product of ``strides``; ``len(channels) >= 3`` so that each
    stream keeps at least one level of its own on either side of the shared middle.

    Example:
        >>> net = XShapeNet(num_classes=8, channels=(4, 8, 16), strides=(2, 2), streams=("a", "t"))
        >>> net(torch.zeros(2, 1, 32, 32), "t").shape
        torch.Size([2, 8, 32, 32])
        >>> sorted(net.stream_parameters("t")) == sorted(n for n, _ in net.named_parameters() if ".t." in n)
        True
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 8,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "instance",
        streams: Sequence[str] = ("a", "t"),
    ):
        super().__init__()
        channels, strides = tuple(channels), tuple(strides)
        self.size_divisor = unet_size_divisor(channels, strides, min_levels=3, network="XShapeNet")
        if len(set(streams)) != len(streams) or not streams:
            raise ValueError(f"streams must be distinct names, got {tuple(streams)}")
        self.streams = tuple(streams)
        depth = len(channels) - 1  # number of down-sampling units, as in MONAI's UNet
        units = max(num_res_units, 1)

        def down(c_in: int, c_out: int, stride: int) -> nn.Module:
            return ResidualUnit(2, c_in, c_out, strides=stride, subunits=units, norm=norm)

        def up(c_in: int, c_out: int, stride: int, last: bool) -> nn.Module:
            return nn.Sequential(
                Convolution(2, c_in, c_out, strides=stride, is_transposed=True, norm=norm, conv_only=last and num_res_units == 0),
                *([ResidualUnit(2, c_out, c_out, strides=1, subunits=1, norm=norm, last_conv_only=last)] if num_res_units > 0 else []),
            )

        ins = (in_channels,) + channels[:-1]
        # level i: down unit ins[i] -> channels[i]; up unit (skip + deeper) -> channels[i-1] (num_classes at the top)
        outs_up = (num_classes,) + channels[: depth - 1]
        ups_in = [channels[i] + (channels[i] if i < depth - 1 else channels[-1]) for i in range(depth)]
        own = depth - 1  # levels 0 .. depth-2 are per stream; level depth-1 and the bottom are shared
        self.encoders = nn.ModuleDict(
            {s: nn.ModuleList(down(ins[i], channels[i], strides[i]) for i in range(own)) for s in self.streams}
        )
        self.decoders = nn.ModuleDict(
            {s: nn.ModuleList(up(ups_in[i], outs_up[i], strides[i], i == 0) for i in reversed(range(own))) for s in self.streams}
        )
        last = depth - 1
        self.shared_down = down(ins[last], channels[last], strides[last])
        self.shared_bottom = ResidualUnit(2, channels[last], channels[-1], strides=1, subunits=units, norm=norm)
        self.shared_up = up(ups_in[last], outs_up[last], strides[last], last == 0)

    def forward(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        if stream not in self.encoders:
            raise ValueError(f"stream must be one of {self.streams}, got {stream!r}")
        skips = []
        h = x
        for unit in self.encoders[stream]:
            h = unit(h)
            skips.append(h)
        h = self.shared_down(h)
        h = self.shared_up(torch.cat([h, self.shared_bottom(h)], dim=1))
        for unit, skip in zip(self.decoders[stream], reversed(skips)):
            h = unit(torch.cat([skip, h], dim=1))
        return h

    def stream_parameters(self, stream: str) -> list[str]:
        """Names of the parameters that belong to ``stream`` alone."""
        return [n for n, _ in self.named_parameters() if n.startswith((f"encoders.{stream}.", f"decoders.{stream}."))]
