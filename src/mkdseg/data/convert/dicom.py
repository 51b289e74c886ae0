"""One DICOM series (a folder of single-slice ``.dcm`` files) -> voxels on a RAS grid, for CHAOS's MR.

Slices are ordered by their position along the series' normal (not by file name), must be evenly spaced and
share one orientation and size; voxel ``(i, j, k)`` is column ``i``, row ``j`` of slice ``k``. Pixel values are
rescaled by ``RescaleSlope``/``RescaleIntercept`` and kept int16 when they are whole numbers. Needs pydicom
(``pip install 'mkdseg[convert]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mkdseg.data.nifti import InputError, MissingInputError

#: RAS from DICOM's LPS patient coordinates
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_files(folder: Path) -> list[Path]:
    """The ``.dcm`` files of a series folder (hidden files left out), sorted by name."""
    return sorted(p for p in folder.glob("*.dcm") if not p.name.startswith("."))


def read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The slices of the series in ``folder``: ``(voxels [x, y, z], RAS affine, its files in slice order)``.

    Raises InputError naming the file or folder: no ``.dcm`` files, an unreadable file, slices of different
    orientation or size, or slices not evenly spaced.
    """
    try:
        import pydicom
    except ImportError as e:
        raise InputError("reading CHAOS's DICOM needs pydicom: pip install 'mkdseg[convert]'") from e
    files = dicom_files(folder)
    if not files:
        raise MissingInputError(f"{folder}: no .dcm files")
    slices = []
    for f in files:
        try:
            slices.append(pydicom.dcmread(f))
        except Exception as e:  # pydicom raises several types for broken files
            raise InputError(f"{f}: not a readable DICOM file ({e})") from e
    try:
        orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
        for f, s in zip(files, slices):
            if not np.allclose(np.asarray(s.ImageOrientationPatient, dtype=float), orientation, atol=1e-4):
                raise InputError(f"{f}: its orientation differs from {files[0].name}'s; not one series")
            if (s.Rows, s.Columns) != (slices[0].Rows, slices[0].Columns):
                raise InputError(f"{f}: {s.Rows}x{s.Columns} pixels, {files[0].name} has {slices[0].Rows}x{slices[0].Columns}")
        along_row, along_column = orientation[:3], orientation[3:]  # directions of increasing column, increasing row
        normal = np.cross(along_row, along_column)
        position = np.array([float(np.dot(normal, s.ImagePositionPatient)) for s in slices])
        row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    except AttributeError as e:
        raise InputError(f"{folder}: a slice lacks a geometry attribute ({e})") from e
    order = np.argsort(position)
    steps = np.diff(position[order])
    if len(steps) and (steps.min() <= 0 or not np.allclose(steps, steps.mean(), rtol=0.05)):
        raise InputError(f"{folder}: slices are not evenly spaced along their normal ({np.round(steps, 2).tolist()} mm)")
    first = slices[order[0]]
    lps = np.eye(4)
    lps[:3, 0] = along_row * column_spacing
    lps[:3, 1] = along_column * row_spacing
    lps[:3, 2] = normal * (float(steps.mean()) if len(steps) else float(getattr(first, "SliceThickness", 1.0)))
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=float)
    voxels = np.stack([_rescaled(slices[k], files[k]).T for k in order], axis=-1)
    return voxels, LPS_TO_RAS @ lps, [files[k] for k in order]


def _rescaled(ds, path: Path) -> np.ndarray:
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as e:  # missing pixel data, unsupported compression
        raise InputError(f"{path}: its pixels cannot be read ({e})") from e
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    whole = np.array_equal(pixels, np.round(pixels)) and (not pixels.size or np.abs(pixels).max() < 2**15)
    return pixels.astype(np.int16) if whole else pixels
