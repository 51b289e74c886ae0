"""Cases of downloads that ship NIfTI image/label pairs (BTCV, MM-WHS): header checks, exact copies, label codes.

The image is copied value for value (:func:`mkdseg.data.nifti.load_exact`: a scaled integer CT stays integer
Hounsfield units); the label's codes become classes 0..N through the converter's table, and a code the table
lacks is an error naming the file and the codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from mkdseg.data.convert.writer import Case, Scan
from mkdseg.data.nifti import AFFINE_ATOL_MM, InputError, load_exact, load_geometry

_UNKNOWN = 255  # never a class: datasets have far fewer structures


def nifti_case(name: str, image: Path, label: Path, to_classes: Callable[[np.ndarray, Path], np.ndarray]) -> Case:
    """The case of one image/label pair.

    Args:
        name: the case identifier.
        image: the image file.
        label: its label file, on the image's grid.
        to_classes: the label's integer codes (and the file, for errors) -> uint8 classes 0..N.
    """
    def check() -> None:
        geometry, of_label = load_geometry(image), load_geometry(label, "label")
        if of_label.shape != geometry.shape:
            raise InputError(f"{label}: label shape {of_label.shape} differs from its image {image} shape {geometry.shape}")
        differ = np.abs(of_label.affine - geometry.affine).max()
        if differ > AFFINE_ATOL_MM:
            raise InputError(f"{label}: label grid (affine) differs from its image {image} by up to {differ:.3g} mm")

    def read() -> tuple[list[Scan], Scan]:
        values, source = load_exact(image)
        codes, of_label = load_exact(label, "label")
        if codes.dtype.kind == "f":
            if not np.array_equal(codes, np.rint(codes)):
                raise InputError(f"{label}: label holds non-integer values, e.g. {codes[codes != np.rint(codes)].flat[0]!r}")
            codes = codes.astype(np.int32)
        shape = source.shape[:3]
        header = source.header if type(source.header) is nib.Nifti1Header else None
        classes = to_classes(codes.reshape(shape), label)
        return [Scan(values.reshape(shape), source.affine, image, header)], Scan(classes, of_label.affine, label)

    return Case(name, read, check)


def codes_to_classes(codes: np.ndarray, table: Mapping[int, int], source: Path, known: str) -> np.ndarray:
    """A label volume's integer codes -> uint8 classes; InputError naming the file and the codes not in ``table``.

    Args:
        codes: the label volume, integer, slices along the last axis.
        table: code -> class (background 0 -> 0 included).
        source: the label file, for the error.
        known: the dataset's codes as the error lists them, e.g. ``"205 MYO, 420 LA, ..."``.
    """
    if not codes.size:
        return codes.astype(np.uint8)
    low, high = int(codes.min()), int(codes.max())
    if high - low > 2**16:  # a table that large is garbage anyway: find the stray codes the slow way
        stray = sorted(set(np.unique(codes).tolist()) - set(table))
        raise InputError(f"{source}: label values {stray[:8]} are none of the dataset's codes ({known})")
    lookup = np.full(high - low + 1, _UNKNOWN, np.uint8)
    for code, cls in table.items():
        if low <= code <= high:
            lookup[code - low] = cls
    classes = np.empty(codes.shape, np.uint8)
    for k in range(codes.shape[-1]):  # slice by slice: the index array of a whole CT would take 8 bytes a voxel
        classes[..., k] = lookup[codes[..., k].astype(np.int64) - low]
    if (classes == _UNKNOWN).any():
        stray = np.unique(codes[classes == _UNKNOWN]).tolist()
        raise InputError(f"{source}: label values {stray[:8]} are none of the dataset's codes ({known})")
    return classes
