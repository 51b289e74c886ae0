"""Post-processing by connected components, nnU-Net's way: per structure, keep only its largest 3D component,
but only for the structures where that raised Dice on the validation subjects.

The decision is made on validation (never on test subjects) by :class:`mkdseg.methods.SegmentationMethod`
at the end of each validation epoch, from every predictor's labels scored as they are and with each
structure's largest component kept; it is stored in the checkpoint (key :data:`CHECKPOINT_KEY`) and applied
by ``mkdseg test``, ``predict`` and ``segment`` (``--no-postprocess`` switches it off there). A checkpoint
without a decision (older ones, runs without validation) applies none. The decision, a plain dict::

    {"keep_largest": {predictor: [structure names]}, "step": N, "subjects": [validation subjects],
     "dice": {predictor: {structure: {"plain": mean Dice, "largest": mean Dice}}}}

Removing a structure's other components turns their voxels into background, so it changes the Dice of that
structure only: one pass with every structure's largest component kept scores every structure's choice.

>>> labels = np.zeros((6, 6, 6), np.uint8)
>>> labels[0:2, 0:2, 0:2] = 1; labels[4:6, 4:6, 4:6] = 1; labels[5, 0, 0] = 1  # 8 + 8 + 1 voxels
>>> int((keep_largest(labels, [1]) == 1).sum()), int((keep_largest(labels, []) == 1).sum())
(8, 17)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

CHECKPOINT_KEY = "mkdseg_postprocessing"


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (MONAI's KeepLargestConnectedComponent
    does the same but needs scikit-image, which nothing else here needs). Ties: the first in scan order."""
    components, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return mask
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def _bounding_slices(mask: np.ndarray) -> tuple[slice, ...] | None:
    slices = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        slices.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(slices)


def keep_largest(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """``labels`` (class indices, any number of dims) with every class of ``classes`` reduced to its largest
    connected component, the rest of it background. A copy; ``labels`` itself is unchanged."""
    out = np.array(labels, copy=True)
    for c in sorted({int(c) for c in classes}):
        mask = out == c
        box = _bounding_slices(mask)  # components are labelled in the class's box: a fraction of a CT
        if box is None:
            continue
        part = mask[box]
        out[box][part & ~largest_component(part)] = 0
    return out


def decide(plain: Sequence[Mapping], largest: Sequence[Mapping]) -> dict[str, list[str]]:
    """``{predictor: structures whose mean Dice over subjects is higher with the largest component kept}``,
    from rows ``{"predictor", "subject", "structure", "dice"}`` scored as predicted (``plain``) and with each
    structure's largest component kept (``largest``). Strictly higher: a tie keeps the prediction as it is.
    Subjects where a structure's Dice is undefined (NaN: absent from both) are left out, as in every mean."""
    means = mean_dice(plain, largest)
    return {predictor: [s for s, d in by_structure.items() if d["largest"] > d["plain"]]
            for predictor, by_structure in means.items()}


def mean_dice(plain: Sequence[Mapping], largest: Sequence[Mapping]) -> dict[str, dict[str, dict[str, float]]]:
    """``{predictor: {structure: {"plain": mean Dice, "largest": mean Dice}}}`` over the subjects where both
    are defined (structures with none are left out)."""
    kept = {(r["predictor"], r["subject"], r["structure"]): r["dice"] for r in largest}
    sums: dict[str, dict[str, list[float]]] = {}
    for r in plain:
        key = (r["predictor"], r["subject"], r["structure"])
        a, b = r["dice"], kept.get(key, float("nan"))
        if math.isnan(a) or math.isnan(b):
            continue
        entry = sums.setdefault(r["predictor"], {}).setdefault(r["structure"], [0.0, 0.0, 0])
        entry[0] += a
        entry[1] += b
        entry[2] += 1
    return {p: {s: {"plain": v[0] / v[2], "largest": v[1] / v[2]} for s, v in by.items()} for p, by in sums.items()}


def apply_decision(plain: Sequence[Mapping], largest: Sequence[Mapping], keep: Mapping[str, Sequence[str]]) -> list[dict]:
    """The rows a decision gives: each (predictor, structure) kept-largest where ``keep`` says so, else as predicted."""
    kept = {(r["predictor"], r["subject"], r["structure"]): r for r in largest}
    rows = []
    for r in plain:
        chosen = r["structure"] in keep.get(r["predictor"], ())
        rows.append(dict(kept[(r["predictor"], r["subject"], r["structure"])] if chosen else r))
    return rows


def structures_to_keep(decision: Mapping | None, predictor: str) -> list[str]:
    """The structures ``decision`` (a checkpoint's, or ``None``) keeps the largest component of, for ``predictor``."""
    if not decision:
        return []
    return list(decision.get("keep_largest", {}).get(predictor, []))


def class_indices(structures: Sequence[str], names: Iterable[str]) -> list[int]:
    """Class indices (1-based, in ``structures``' order) of ``names``; a name not among ``structures`` is an error."""
    index = {name: i for i, name in enumerate(structures, start=1)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"post-processing names {missing}, which the model does not segment ({', '.join(structures)})")
    return [index[n] for n in names]
