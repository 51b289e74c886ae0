"""Randomised appearance: re-style a batch's intensities at random every time it is seen, so that a
segmentor must learn shape rather than one modality's intensities.

Two families from the domain-generalisation literature, both batch-level (they run where the networks
run, CPU or GPU, on a whole batch at once) and drawn from torch's global random streams, which every
mkdseg checkpoint saves and a resumed run restores (:mod:`mkdseg.methods.rng`): a resumed run draws
exactly the styles the uninterrupted run would have drawn.

* :func:`random_convolution`: GIN (Ouyang et al., IEEE TMI 2022): a random shallow convolutional network,
  drawn anew for every sample, mixed with the input and rescaled to its Frobenius norm.
* :func:`location_scale`: SLAug (Su et al., AAAI 2023): random Bezier intensity curves with a random
  scale and shift, over the whole image (global) or per labelled structure and background (class-wise).

MONAI's intensity transforms (``RandHistogramShift`` and kin) are per-sample array transforms with
random states of their own, outside what a checkpoint restores, and none draws a random network or
a per-structure curve; so these are written here, in torch.

Images are in [-1, 1] (the slice cache's range), background at -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Appearance = Literal["none", "gin", "location_scale", "class_location_scale"]
ApplyTo = Literal["assistant", "target", "both"]
APPEARANCES, APPLY_TO = get_args(Appearance), get_args(ApplyTo)
VALUE_RANGE = (-1.0, 1.0)


def random_convolution(images: torch.Tensor, n_layers: int = 4, channels: int = 2, kernel_sizes: tuple[int, ...] = (1, 3)) -> torch.Tensor:
    """GIN's random network on ``images [B, C, H, W]``: ``n_layers`` convolutions (``channels`` in between,
    the kernel size drawn per layer from ``kernel_sizes``, weights and biases ~ N(0, 1) drawn per sample,
    leaky ReLU between layers), mixed with the input by alpha ~ U(0, 1) per sample and rescaled to the
    input's Frobenius norm. One grouped convolution per layer serves the whole batch.

    >>> x = torch.rand(3, 1, 16, 16) * 2 - 1
    >>> y = random_convolution(x)
    >>> y.shape, torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-3)
    (torch.Size([3, 1, 16, 16]), True)
    """
    if n_layers < 1 or channels < 1:
        raise ValueError(f"random_convolution needs n_layers >= 1 and channels >= 1, got {n_layers} and {channels}")
    b, c, h, w = images.shape
    x, in_ch = images, c
    for layer in range(n_layers):
        last = layer == n_layers - 1
        out_ch = c if last else channels
        k = kernel_sizes[int(torch.randint(len(kernel_sizes), ()))]
        weight = torch.randn(b * out_ch, in_ch, k, k, device=images.device, dtype=images.dtype)
        bias = torch.randn(b * out_ch, device=images.device, dtype=images.dtype)
        x = F.conv2d(x.reshape(1, b * in_ch, h, w), weight, bias, padding=k // 2, groups=b).reshape(b, out_ch, h, w)
        if not last:
            x = F.leaky_relu(x)
        in_ch = out_ch
    alpha = torch.rand(b, 1, 1, 1, device=images.device, dtype=images.dtype)
    mixed = alpha * x + (1 - alpha) * images
    scale = images.flatten(1).norm(dim=1) / (mixed.flatten(1).norm(dim=1) + 1e-5)
    return mixed * scale.view(b, 1, 1, 1)


def _bernstein(n_points: int, n_samples: int, device) -> torch.Tensor:
    """``[n_points, n_samples]`` Bernstein basis of a Bezier curve with ``n_points`` control points."""
    t = torch.linspace(0.0, 1.0, n_samples, device=device)
    n = n_points - 1
    return torch.stack([math.comb(n, i) * t ** (n - i) * (1 - t) ** i for i in range(n_points)])


def _interp(values: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` row by row: ``values [R, M]`` through the curves ``xs [R, S]`` (sorted) -> ``ys [R, S]``."""
    idx = torch.searchsorted(xs, values.contiguous()).clamp(1, xs.shape[1] - 1)
    x0, x1 = xs.gather(1, idx - 1), xs.gather(1, idx)
    y0, y1 = ys.gather(1, idx - 1), ys.gather(1, idx)
    weight = ((values - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return y0 + weight * (y1 - y0)


def location_scale(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    n_points: int = 4,
    n_samples: int = 1000,
    background_threshold: float = -0.98,
) -> torch.Tensor:
    """SLAug's location-scale augmentation of ``images [B, 1, H, W]``.

    Global (``labels`` ``None``): one random monotone Bezier curve per image from its minimum to its
    maximum (inner control points uniform in that range), then ``x * scale + shift`` with scale
    ~ N(1, 0.1) clipped to [0.9, 1.1] and shift ~ N(0, a quarter of the value range) kept where it moves
    no more than the image's 20th-80th percentile span out of range, clipped to the range.

    Class-wise (``labels [B, H, W]`` with values < ``num_classes``): the same per region, each structure
    and the background a curve and a location-scale of their own; a structure's curve is non-monotone
    with probability 0.5, the background's always; pixels at or below ``background_threshold`` (air)
    keep their value. SLAug's constants, on [0, 1] there, are rescaled to [-1, 1].

    >>> x = torch.rand(2, 1, 8, 8) * 2 - 1
    >>> y = location_scale(x)
    >>> y.shape, bool(y.min() >= -1 and y.max() <= 1)
    (torch.Size([2, 1, 8, 8]), True)
    """
    b, c, h, w = images.shape
    if c != 1:
        raise ValueError(f"location_scale takes single-channel images, got {c} channels")
    lo, hi = VALUE_RANGE
    flat = images.reshape(b, 1, h * w)
    if labels is None:
        regions = torch.zeros(b, h * w, dtype=torch.long, device=images.device)
        n_regions, nonmonotone_prob = 1, torch.zeros(1, device=images.device)
    else:
        if num_classes is None:
            raise ValueError("class-wise location_scale needs num_classes")
        regions = labels.reshape(b, h * w).long()
        n_regions = num_classes
        nonmonotone_prob = torch.full((num_classes,), 0.5, device=images.device)
        nonmonotone_prob[0] = 1.0
    member = regions.unsqueeze(1) == torch.arange(n_regions, device=images.device).view(1, -1, 1)  # [B, R, M]
    values = flat.expand(b, n_regions, h * w)
    start = values.masked_fill(~member, math.inf).amin(-1)  # [B, R]; inf for absent regions
    end = values.masked_fill(~member, -math.inf).amax(-1)
    present = member.any(-1)
    start, end = torch.where(present, start, lo), torch.where(present, end, hi)

    def control_points() -> torch.Tensor:  # [B, R, n_points]: the ends and n_points-2 uniform inner points
        inner = start.unsqueeze(-1) + torch.rand(b, n_regions, n_points - 2, device=images.device) * (end - start).unsqueeze(-1)
        return torch.cat([start.unsqueeze(-1), inner, end.unsqueeze(-1)], -1)

    basis = _bernstein(n_points, n_samples, images.device)
    xs, ys = control_points() @ basis, control_points() @ basis  # [B, R, S]
    xs = xs.sort(-1).values
    nonmonotone = torch.rand(b, n_regions, 1, device=images.device) < nonmonotone_prob.view(1, -1, 1)
    ys = torch.where(nonmonotone, ys, ys.sort(-1).values)
    curved = _interp(values.reshape(b * n_regions, -1), xs.reshape(b * n_regions, -1), ys.reshape(b * n_regions, -1))
    curved = curved.reshape(b, n_regions, h * w)

    # location and scale per region, the shift bounded by the region's own 20th and 80th percentiles
    scale = (1 + 0.1 * torch.randn(b, n_regions, 1, device=images.device)).clamp(0.9, 1.1)
    shift = 0.25 * (hi - lo) * torch.randn(b, n_regions, 1, device=images.device)
    masked = curved.masked_fill(~member, math.nan)
    low_q, high_q = torch.nanquantile(masked, torch.tensor([0.2, 0.8], device=images.device), dim=-1, keepdim=True)
    low_q, high_q = low_q.nan_to_num(lo), high_q.nan_to_num(hi)
    shift = torch.maximum(torch.minimum(shift, hi - high_q), lo - low_q)  # numpy.clip(shift, lo - p20, hi - p80)
    styled = (curved * scale + shift).clamp(lo, hi)
    out = styled.gather(1, regions.unsqueeze(1))  # each pixel from its own region's style
    if labels is not None:
        out = torch.where(flat <= background_threshold, flat, out)
    return out.reshape(b, 1, h, w).to(images.dtype)


@dataclass(frozen=True)
class RandomAppearance:
    """Re-styles the assistant images, the target images or both of a training batch (``x_a``, ``x_t``,
    with labels ``y_a``, ``y_t``; the unlabelled target images ``x_u``, if any, with the target's and, having
    no labels, with a global style) with one of :data:`APPEARANCES`; ``none`` leaves the batch alone.

    >>> styler = RandomAppearance("gin", "assistant")
    >>> batch = {"x_a": torch.rand(2, 1, 8, 8), "y_a": torch.zeros(2, 8, 8, dtype=torch.long),
    ...          "x_t": torch.rand(2, 1, 8, 8), "y_t": torch.zeros(2, 8, 8, dtype=torch.long)}
    >>> out = styler(batch, num_classes=2)
    >>> torch.equal(out["x_t"], batch["x_t"]), torch.equal(out["x_a"], batch["x_a"])
    (True, False)
    """

    kind: str = "none"
    apply_to: str = "assistant"

    def __post_init__(self):
        if self.kind not in APPEARANCES:
            raise ValueError(f"data.appearance must be one of {APPEARANCES}, got {self.kind!r}")
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"data.appearance_on must be one of {APPLY_TO}, got {self.apply_to!r}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The batch's image keys this re-styles."""
        if self.kind == "none":
            return ()
        return {"assistant": ("x_a",), "target": ("x_t", "x_u"), "both": ("x_a", "x_t", "x_u")}[self.apply_to]

    def style(self, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
        if self.kind == "gin":
            return random_convolution(images)
        if self.kind == "location_scale":
            return location_scale(images)
        return location_scale(images, labels, num_classes)

    def __call__(self, batch: dict, num_classes: int) -> dict:
        """A copy of ``batch`` with the chosen images re-styled (labels and other entries as they were)."""
        out = dict(batch)
        for key in self.keys:
            if key in batch:
                out[key] = self.style(batch[key].float(), batch.get("y" + key[1:]), num_classes)
        return out
