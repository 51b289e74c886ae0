"""The seven cardiac structures, their class indices and their MM-WHS label codes.

Class 0 is background; classes 1..7 follow ``STRUCTURES`` in this exact order everywhere in mkdseg
(phantom, preprocessing, metrics, predictions). ``MMWHS_CODES[i]`` is the MM-WHS 2017 code of class i+1.
"""

from __future__ import annotations

import numpy as np

STRUCTURES: tuple[str, ...] = ("MYO", "LA", "LV", "RA", "RV", "AA", "PA")
STRUCTURE_NAMES: dict[str, str] = {
    "MYO": "left ventricle myocardium",
    "LA": "left atrium blood cavity",
    "LV": "left ventricle blood cavity",
    "RA": "right atrium blood cavity",
    "RV": "right ventricle blood cavity",
    "AA": "ascending aorta",
    "PA": "pulmonary artery",
}
MMWHS_CODES: tuple[int, ...] = (205, 420, 500, 550, 600, 820, 850)
NUM_CLASSES: int = len(STRUCTURES) + 1  # + background


def codes_to_classes(label: np.ndarray, unknown: str = "error", source: str = "label") -> np.ndarray:
    """Map an MM-WHS code volume to class indices 0..7.

    ``unknown='error'`` raises ``ValueError`` naming ``source`` and the unexpected codes;
    ``unknown='background'`` maps them to 0.
    """
    if unknown not in ("error", "background"):
        raise ValueError(f"unknown must be 'error' or 'background', got {unknown!r}")
    lut_codes = np.asarray((0,) + MMWHS_CODES)
    values = np.unique(label)
    bad = np.setdiff1d(values, lut_codes)
    if bad.size and unknown == "error":
        raise ValueError(
            f"{source}: label codes {bad.tolist()} are not MM-WHS codes {list(lut_codes)}; "
            "pass unknown_labels='background' to map them to background"
        )
    out = np.zeros(label.shape, dtype=np.uint8)
    for cls, code in enumerate(MMWHS_CODES, start=1):
        out[label == code] = cls
    return out


def classes_to_codes(classes: np.ndarray) -> np.ndarray:
    """Map class indices 0..7 back to MM-WHS codes (0 stays 0)."""
    lut = np.asarray((0,) + MMWHS_CODES, dtype=np.int16)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class indices must lie in 0..{NUM_CLASSES - 1}")
    return lut[classes]
