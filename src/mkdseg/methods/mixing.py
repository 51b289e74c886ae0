"""Batch-level image mixing for learning from unlabelled slices: which pixels of a pasted image replace
those of the image it is pasted onto.

* :func:`box_masks`: CutMix (Yun et al. 2019) as UniMatch draws it (Yang et al., CVPR 2023): one box per
  sample, area 2-40 % of the slice, aspect ratio 0.3-3.3 — also the box of bidirectional copy-paste
  (BCP, Bai et al., CVPR 2023).
* :func:`class_masks`: ClassMix / DACS (Olsson et al. 2021; Tranheden et al., WACV 2021): the pixels of
  half of the foreground classes present in the pasted image's (pseudo-)label.
* :func:`paste`: images, labels and per-pixel weights mixed by such masks.
* :class:`Mixer`: the strong views of weak-to-strong pseudo-labelling built from these: where the pasted image
  comes from (another unlabelled slice, a labelled target or assistant slice) and BCP's way back.

MONAI's ``CutMix`` mixes whole labels by area for classification and draws from a random state of its
own, outside what mkdseg's checkpoints restore; these draw from torch's global stream, so a resumed run
mixes exactly as the uninterrupted one (:mod:`mkdseg.methods.rng`).

Shapes: images ``[B, 1, H, W]``, labels ``[B, H, W]`` (integer classes), weights ``[B, H, W]``, masks
``[B, H, W]`` bool (True: the pasted image's pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

#: how the pasted pixels are chosen: none (no mixing), a box, or classes
MixShape = Literal["none", "cutmix", "classmix"]
#: where a pasted image comes from: another unlabelled target slice, a labelled target or assistant slice
MixSource = Literal["unlabelled", "target", "assistant"]
#: ``(images [B, 1, H, W], labels [B, H, W], weights [B, H, W])``: a view and what the student learns on it
Labelled = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: UniMatch's CutMix box: area as a fraction of the slice, and aspect ratio (height / width)
BOX_AREA = (0.02, 0.4)
BOX_ASPECT = (0.3, 1 / 0.3)


def box_masks(batch: int, height: int, width: int, device=None) -> torch.Tensor:
    """One random box per sample (area and aspect as :data:`BOX_AREA`, :data:`BOX_ASPECT`, the box inside the slice).

    >>> m = box_masks(4, 32, 32)
    >>> m.shape, bool((m.flatten(1).sum(1) > 0).all())
    (torch.Size([4, 32, 32]), True)
    """
    area = torch.empty(batch).uniform_(*BOX_AREA) * height * width
    log_aspect = torch.empty(batch).uniform_(math.log(BOX_ASPECT[0]), math.log(BOX_ASPECT[1]))
    box_h = (area * log_aspect.exp()).sqrt().round().clamp(1, height).long()
    box_w = (area / log_aspect.exp()).sqrt().round().clamp(1, width).long()
    top = (torch.rand(batch) * (height - box_h + 1)).long()
    left = (torch.rand(batch) * (width - box_w + 1)).long()
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None]))
    return inside.to(device)


def class_masks(labels: torch.Tensor) -> torch.Tensor:
    """ClassMix: per sample, the pixels of a random half (rounded up) of the foreground classes present in
    ``labels [B, H, W]``; empty where a sample has no foreground.

    >>> y = torch.tensor([[[0, 1], [2, 2]]])
    >>> m = class_masks(y)
    >>> bool(m[0, 0, 0]), int(m.sum()) in (1, 2)
    (False, True)
    """
    num_classes = int(labels.max()) + 1 if labels.numel() else 1
    present = torch.zeros(labels.shape[0], num_classes, dtype=torch.bool, device=labels.device)
    present.scatter_(1, labels.flatten(1), True)
    present[:, 0] = False  # background is never pasted as a class
    # a random order of the present classes; the first half of them (rounded up) is pasted
    score = torch.rand(present.shape, device=labels.device).masked_fill(~present, 2.0)
    rank = score.argsort(1).argsort(1)
    chosen = present & (rank < (present.sum(1, keepdim=True) + 1) // 2)
    return chosen.gather(1, labels.flatten(1)).view_as(labels)


def paste(mask: torch.Tensor, pasted: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
          base: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image, label, weight)`` of ``pasted`` where ``mask``, of ``base`` elsewhere.

    >>> one, zero = (torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2).long(), torch.ones(1, 2, 2)), (torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2).long(), torch.zeros(1, 2, 2))
    >>> image, label, weight = paste(torch.tensor([[[True, False], [False, False]]]), one, zero)
    >>> image.flatten().tolist(), label.flatten().tolist()
    ([1.0, 0.0, 0.0, 0.0], [1, 0, 0, 0])
    """
    image = torch.where(mask[:, None], pasted[0], base[0])
    label = torch.where(mask, pasted[1], base[1])
    weight = torch.where(mask, pasted[2], base[2])
    return image, label, weight


@dataclass(frozen=True)
class Mixer:
    """The strong views of the unlabelled slices (weak-to-strong pseudo-labelling), from the batch.

    Args:
        shape: ``none`` (the slice as it is), ``cutmix`` or ``classmix``: which pixels of a pasted image replace
            the unlabelled slice's.
        sources: where the pasted image comes from, drawn per sample (:data:`MixSource`); labelled pixels carry
            their ground truth (weight 1), unlabelled ones their pseudo-label.
        back: also BCP's other direction: a box of each unlabelled slice pasted into a labelled target slice.
    """

    shape: MixShape = "cutmix"
    sources: Sequence[MixSource] = ("unlabelled",)
    back: bool = False

    def pasted(self, batch: dict, unlabelled: Labelled) -> Labelled:
        """Per sample, an image from one of :attr:`sources` with its label and weights."""
        ones = torch.ones_like(unlabelled[2])
        candidates = {
            "unlabelled": tuple(t.roll(1, 0) for t in unlabelled),
            "target": (batch["x_t"], batch["y_t"].long(), ones),
            "assistant": (batch["x_a"], batch["y_a"].long(), ones),
        }
        sources = list(self.sources)
        choice = torch.randint(len(sources), (unlabelled[0].shape[0],), device=unlabelled[0].device)
        drawn = candidates[sources[0]]
        for i, name in enumerate(sources[1:], start=1):
            drawn = paste((choice == i)[:, None, None].expand_as(drawn[1]), candidates[name], drawn)
        return drawn

    def views(self, batch: dict, unlabelled: Labelled, restyle=lambda x: x) -> dict[str, Labelled]:
        """``{"strong": the unlabelled slices mixed as :attr:`shape` says}``, and with :attr:`back` ``"back"``: the
        labelled target slices with a box of the unlabelled ones (ground truth outside the box). ``restyle``: what
        the student sees of each mixed image (applied as each view is made: the random draws keep one order)."""
        b, _, h, w = unlabelled[0].shape
        strong = unlabelled
        if self.shape != "none":
            source = self.pasted(batch, unlabelled)
            mask = box_masks(b, h, w, unlabelled[0].device) if self.shape == "cutmix" else class_masks(source[1])
            strong = paste(mask, source, unlabelled)
        views = {"strong": (restyle(strong[0]), *strong[1:])}
        if self.back:
            labelled = (batch["x_t"], batch["y_t"].long(), torch.ones_like(unlabelled[2]))
            back = paste(box_masks(b, h, w, unlabelled[0].device), unlabelled, labelled)
            views["back"] = (restyle(back[0]), *back[1:])
        return views
