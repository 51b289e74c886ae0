"""One segmentor for two modalities: every convolution shared, the normalisation modality-specific
(Dou et al., "Unpaired multi-modal segmentation via knowledge distillation", IEEE TMI 2020).

Built on :class:`~mkdseg.nets.ResidualUNet` (MONAI's UNet): its instance norms, which carry no parameters,
are each followed by a scale and shift of the modality being segmented. Dou et al. keep a batch norm per
modality; mkdseg's segmentors normalise per sample (instance norm), so what is left to make
modality-specific is the affine part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mkdseg.nets.segmentor import ResidualUNet


class ModalityNorm(nn.Module):
    """``norm`` (parameter-free) followed by a per-channel scale and shift of each of ``modalities``;
    which one applies is :attr:`modality`, set by the owning :class:`SharedKernelUNet` for each forward."""

    def __init__(self, norm: nn.Module, channels: int, modalities: Sequence[str]):
        super().__init__()
        self.norm = norm
        self.scale = nn.ParameterDict({m: nn.Parameter(torch.ones(channels)) for m in modalities})
        self.shift = nn.ParameterDict({m: nn.Parameter(torch.zeros(channels)) for m in modalities})
        self.modality = modalities[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.norm(x) * self.scale[self.modality].view(shape) + self.shift[self.modality].view(shape)


class SharedKernelUNet(nn.Module):
    """``forward(x [B, in_channels, H, W], modality) -> [B, num_classes, H, W]`` logits: the kernels of one
    :class:`ResidualUNet` (built from ``unet_options``, its arguments), the normalisation of ``modality``
    (one of ``modalities``).

    Example:
        >>> net = SharedKernelUNet(num_classes=3, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> x = torch.randn(2, 1, 16, 16)
        >>> net(x, "t").shape
        torch.Size([2, 3, 16, 16])
        >>> _ = torch.nn.init.constant_(net.norms[0].scale["a"], 2.0)
        >>> torch.equal(net(x, "a"), net(x, "t"))
        False
    """

    def __init__(self, *, modalities: Sequence[str] = ("a", "t"), **unet_options):
        super().__init__()
        self.modalities = tuple(modalities)
        self.unet = ResidualUNet(**unet_options)
        self.size_divisor = self.unet.size_divisor
        self.norms: list[ModalityNorm] = []
        for name, module in list(self.unet.named_modules()):
            if isinstance(module, nn.modules.instancenorm._InstanceNorm):
                parent_name, _, child = name.rpartition(".")
                norm = ModalityNorm(module, module.num_features, self.modalities)
                setattr(self.unet.get_submodule(parent_name), child, norm)
                self.norms.append(norm)
        if not self.norms:
            raise ValueError("SharedKernelUNet: the segmentor has no instance norm to make modality-specific")

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        if modality not in self.modalities:
            raise ValueError(f"modality must be one of {self.modalities}, got {modality!r}")
        for norm in self.norms:
            norm.modality = modality
        return self.unet(x)
