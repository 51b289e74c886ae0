"""Test-time mirroring: a slice's probabilities averaged with those of its mirror images, as nnU-Net predicts.

Mirroring is given by anatomical axes (``LR``, ``AP``, ``SI``), whatever array axis they lie on: a slice's
in-plane layout (``plane``, e.g. ``RA``: rows run along left-right, columns along anterior-posterior; see
:attr:`mkdseg.data.cache.VolumeRecord.plane` and :data:`mkdseg.data.roi.CANONICAL_PLANES`) says which. Every
combination of the mirrored dims is predicted (nnU-Net's rule: ``2^k`` passes for ``k`` dims), each mirrored
back and averaged with the plain prediction.

A network trained without left-right flips (the default where a structure is named left or right, see
:attr:`mkdseg.data.UnpairedSliceDataModule.flip_axes`) reads a mirrored body's right kidney, now on the left,
as the *left* kidney. So in a pass mirrored across the midline (an ``LR`` flip) each structure named
left/right takes the probabilities of its partner (``swap_lateral``): pairs are found by name
(:func:`lateral_partners`), nothing about an anatomy is written here.

>>> lateral_partners(["spleen", "right kidney", "left kidney", "Left_Lung", "liver"])
[0, 1, 3, 2, 4, 5]
>>> Mirroring.of("RA", ["LR"], ["spleen", "right kidney", "left kidney"]).passes
(((), None), ((-2,), (0, 1, 3, 2)))
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mkdseg.data.augment import AXIS_LETTERS, flip_dims

ANATOMICAL_AXES = tuple(AXIS_LETTERS)
_LATERAL = re.compile(r"(?<![a-z])(left|right)(?![a-z])", re.IGNORECASE)  # also between underscores: "Left_Kidney"
_OTHER_SIDE = {"left": "right", "right": "left"}


def parse_axes(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``LR``, ``LR,AP``, ``["LR", "AP"]`` -> the anatomical axes, checked; ``None``/empty/``none``: no mirroring.

    >>> parse_axes("lr,AP"), parse_axes(None), parse_axes(["SI"])
    (('LR', 'AP'), (), ('SI',))
    """
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    axes = []
    for item in items:
        axis = item.strip().upper()
        if axis == "NONE":
            continue
        if axis not in ANATOMICAL_AXES:
            raise ValueError(f"mirror axis {item!r}: must be one of {', '.join(ANATOMICAL_AXES)}")
        if axis not in axes:
            axes.append(axis)
    return tuple(axes)


def lateral_partners(structures: Sequence[str]) -> list[int]:
    """A class permutation (background 0 first) swapping each structure named left/right with its partner,
    the structure of the same name with the other side (``right kidney`` / ``left kidney``, ``Kidney_Left`` /
    ``Kidney_Right``; a letter such as ``Kidney_L`` names no side). Unpaired structures map to themselves."""
    index = {name.lower(): i for i, name in enumerate(structures, start=1)}
    perm = list(range(len(structures) + 1))
    for i, name in enumerate(structures, start=1):
        partner = _LATERAL.sub(lambda m: _OTHER_SIDE[m.group(1).lower()], name.lower())
        if partner != name.lower() and partner in index:
            perm[i] = index[partner]
    return perm


@dataclass(frozen=True)
class Mirroring:
    """The passes of test-time mirroring: ``(dims to flip, class permutation or None)`` each, the first
    the plain slice. :meth:`of` builds them from anatomical axes; ``Mirroring()`` is no mirroring."""

    passes: tuple[tuple[tuple[int, ...], tuple[int, ...] | None], ...] = (((), None),)

    @classmethod
    def of(cls, plane: str, axes: Sequence[str], structures: Sequence[str], swap_lateral: bool = True) -> Mirroring:
        """Mirroring along ``axes`` of slices laid out as ``plane``; in passes that flip the ``LR`` dim,
        left/right structures swapped (``swap_lateral``). An axis perpendicular to the slices flips nothing."""
        axes = parse_axes(axes)
        dims = flip_dims(plane, axes)
        lateral = set(flip_dims(plane, ["LR"]))
        perm = tuple(lateral_partners(structures))
        swaps = swap_lateral and perm != tuple(range(len(perm)))
        passes = []
        for n in range(len(dims) + 1):
            for subset in itertools.combinations(dims, n):
                passes.append((subset, perm if swaps and lateral & set(subset) else None))
        return cls(tuple(passes))

    @property
    def active(self) -> bool:
        return len(self.passes) > 1


def mirrored_mean(predict: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: torch.Tensor,
                  mirroring: Mirroring | None) -> dict[str, torch.Tensor]:
    """``predict(x [B, 1, H, W]) -> {name: probabilities [B, C, H, W]}`` averaged over ``mirroring``'s passes,
    each mirrored back (and its lateral classes swapped) before the average. No mirroring: ``predict(x)``
    itself, untouched."""
    if mirroring is None or not mirroring.active:
        return predict(x)
    total: dict[str, torch.Tensor] = {}
    for dims, perm in mirroring.passes:
        out = predict(x.flip(dims) if dims else x)
        for name, probs in out.items():
            probs = probs.float()
            probs = probs.flip(dims) if dims else probs
            if perm is not None:
                probs = probs[:, list(perm)]
            total[name] = total[name] + probs if name in total else probs.clone()
    return {name: t / len(mirroring.passes) for name, t in total.items()}
