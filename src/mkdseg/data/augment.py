"""Random flips and rotations applied to an image and its label map together."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_flip_rotate(
    image: torch.Tensor,
    label: torch.Tensor | None,
    max_degrees: float = 15.0,
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one random left-right flip and rotation to ``image [C, H, W]`` and ``label [H, W]``.

    Both go through the same sampling grid: bilinear for the image, nearest for the label, so the
    label stays aligned and keeps integer values. Pixels rotated in from outside take the image's
    background value -1 and the label's background 0.
    """
    flip = torch.rand((), generator=generator).item() < flip_prob
    angle = math.radians((torch.rand((), generator=generator).item() * 2 - 1) * max_degrees)
    if not flip and angle == 0.0:
        return image, label
    cos, sin = math.cos(angle), math.sin(angle)
    sx = -1.0 if flip else 1.0
    theta = torch.tensor([[cos * sx, -sin, 0.0], [sin * sx, cos, 0.0]], dtype=torch.float32).unsqueeze(0)
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    # shift so that zero padding means background (-1) for the image
    warped = F.grid_sample((image.float() + 1).unsqueeze(0), grid, mode="bilinear", align_corners=False)[0] - 1
    if label is None:
        return warped, None
    warped_label = F.grid_sample(label[None, None].float(), grid, mode="nearest", align_corners=False)[0, 0]
    return warped, warped_label.to(label.dtype)
