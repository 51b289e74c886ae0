"""Random flips and rotations applied to an image and its label map together, flips chosen by anatomy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: the two direction letters of each anatomical axis
AXIS_LETTERS = {"LR": "LR", "AP": "AP", "SI": "SI"}


def flip_dims(plane: str, axes: Sequence[str]) -> tuple[int, ...]:
    """The array dims (``-2`` rows, ``-1`` columns) of a slice laid out as ``plane`` that lie along the
    anatomical ``axes`` (``LR``, ``AP``, ``SI``).

    >>> flip_dims("RA", ["LR"]), flip_dims("PL", ["LR"]), flip_dims("RA", ["SI"])
    ((-2,), (-1,), ())
    """
    return tuple(dim for dim, letter in zip((-2, -1), plane) if any(letter in AXIS_LETTERS[a] for a in axes))


def random_flip_rotate(
    image: torch.Tensor,
    label: torch.Tensor | None,
    max_degrees: float = 15.0,
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
    dims: Sequence[int] = (-1,),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mirror ``image [C, H, W]`` and ``label [H, W]`` along each of ``dims`` (``-2`` rows, ``-1``
    columns) with probability ``flip_prob`` each, then rotate both by one random angle.

    Both go through the same sampling grid: bilinear for the image, nearest for the label, so the
    label stays aligned and keeps integer values. Pixels rotated in from outside take the image's
    background value -1 and the label's background 0.
    """
    flips = {dim: torch.rand((), generator=generator).item() < flip_prob for dim in dims}
    angle = math.radians((torch.rand((), generator=generator).item() * 2 - 1) * max_degrees)
    if not any(flips.values()) and angle == 0.0:
        return image, label
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid's x runs along the columns (dim -1), y along the rows (dim -2)
    sx, sy = (-1.0 if flips.get(-1) else 1.0), (-1.0 if flips.get(-2) else 1.0)
    theta = torch.tensor([[cos * sx, -sin * sy, 0.0], [sin * sx, cos * sy, 0.0]], dtype=torch.float32).unsqueeze(0)
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    # shift so that zero padding means background (-1) for the image
    warped = F.grid_sample((image.float() + 1).unsqueeze(0), grid, mode="bilinear", align_corners=False)[0] - 1
    if label is None:
        return warped, None
    warped_label = F.grid_sample(label[None, None].float(), grid, mode="nearest", align_corners=False)[0, 0]
    return warped, warped_label.to(label.dtype)
