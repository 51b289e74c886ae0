"""Reading, validating, reorienting and writing NIfTI volumes.

Everything inside mkdseg works on volumes in one canonical orientation, RAS+ (array axis 0 runs to the
patient's Right, axis 1 Anterior, axis 2 Superior; axis 2 is therefore the transverse slice axis).
Reorientation only permutes and flips array axes (nibabel ``io_orientation``: the closest canonical
axes, also for oblique affines); it never resamples, so :func:`from_canonical` undoes it exactly and a
prediction can be written back in the input's shape, affine and orientation.

Every problem with an input file raises :class:`InputError` (a ``ValueError``) or
:class:`MissingInputError` (also a ``FileNotFoundError``), and the message names the file.

>>> import numpy as np, nibabel as nib
>>> geometry = Geometry.from_image(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([-2.0, 1, 3, 1])))
>>> geometry.axcodes, geometry.canonical_spacing
('LAS', (2.0, 1.0, 3.0))
>>> to_canonical(np.zeros((4, 5, 6)), geometry).shape
(4, 5, 6)
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from mkdseg.io import atomic_path

CANONICAL = ("R", "A", "S")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Image and label headers are written by different tools; float32 round-off of a translation of a
# few hundred mm is ~1e-5 mm, far below anything that would matter anatomically.
AFFINE_ATOL_MM = 1e-3

# What nibabel/gzip/numpy raise for truncated, corrupt or non-NIfTI files.
_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError)


class InputError(ValueError):
    """An input file or folder cannot be used; the message names it and says why."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder does not exist."""


class OutputExistsError(InputError, FileExistsError):
    """The output file already exists and overwriting was not asked for."""


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a file's voxel array lies in the world, and what is needed to write data back into it.

    ``shape`` is the file's array shape (3D, or 3D followed by singleton axes), ``affine`` its 4x4
    voxel-to-world (mm) matrix as nibabel reads it, ``header`` a copy of its header.
    """

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    header: nib.Nifti1Header
    #: the array's true orientation where the header's is known to be wrong (e.g. ``"LAS"``); the affine and
    #: header stay the file's, so outputs are still written on the file's own grid
    declared: str | None = None

    @classmethod
    def from_image(cls, image: nib.Nifti1Image, path: str | os.PathLike = "<memory>") -> "Geometry":
        return cls(Path(path), tuple(int(n) for n in image.shape), np.array(image.affine, dtype=np.float64),
                   image.header.copy())

    @property
    def shape3d(self) -> tuple[int, int, int]:
        return self.shape[:3]  # type: ignore[return-value]

    @property
    def axcodes(self) -> str:
        """Orientation of the file's array axes, e.g. ``'LPS'``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the file's axes (column norms of the affine, right for oblique too)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def _ornt(self) -> np.ndarray:
        return axcodes2ornt(tuple(self.declared)) if self.declared else io_orientation(self.affine)

    def declared_as(self, axcodes: str | None) -> "Geometry":
        """This geometry with its array orientation taken from ``axcodes`` instead of the header (``None``: as is)."""
        if axcodes is None:
            return self
        return replace(self, declared=check_axcodes(axcodes))

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        shape = [0, 0, 0]
        for axis, (target, _) in enumerate(self._ornt):
            shape[int(target)] = self.shape3d[axis]
        return tuple(shape)  # type: ignore[return-value]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical (R, A, S) array axes."""
        spacing = [0.0, 0.0, 0.0]
        for axis, (target, _) in enumerate(self._ornt):
            spacing[int(target)] = self.spacing[axis]
        return tuple(spacing)  # type: ignore[return-value]

    @property
    def canonical_affine(self) -> np.ndarray:
        """Affine of the canonical array (same world positions as the file's voxels)."""
        return self.affine @ nib.orientations.inv_ornt_aff(self._ornt, self.shape3d)


def check_axcodes(axcodes: str) -> str:
    """``axcodes`` upper-cased if it names one direction of each anatomical axis (``LAS``, ``RPI`` ...)."""
    codes = str(axcodes).strip().upper()
    axes = sorted(next((i for i, pair in enumerate(("LR", "PA", "IS")) if c in pair), -1) for c in codes)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise ValueError(f"orientation {axcodes!r} must name one of L/R, one of A/P and one of S/I, e.g. 'LAS'")
    return codes


def to_canonical(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Reorient a ``[X, Y, Z]`` array from the file's axes to canonical RAS (a view, no copy)."""
    array = array.reshape(geometry.shape3d)
    return apply_orientation(array, ornt_transform(geometry._ornt, axcodes2ornt(CANONICAL)))


def from_canonical(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of :func:`to_canonical`: back to the file's axes and full shape (singletons included)."""
    if array.shape != geometry.canonical_shape:
        raise ValueError(f"canonical array shape {array.shape} != {geometry.canonical_shape} of {geometry.path}")
    back = apply_orientation(array, ornt_transform(axcodes2ornt(CANONICAL), geometry._ornt))
    return back.reshape(geometry.shape)


def _open(path: str | os.PathLike, what: str) -> nib.Nifti1Image:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: {what} file not found")
    if not is_nifti_path(path):
        raise InputError(f"{path}: {what} must be a NIfTI file ending in .nii or .nii.gz")
    try:
        image = nib.load(path, mmap=False)
    except _READ_ERRORS as e:
        raise InputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})")
    return image


def _check_3d(image: nib.Nifti1Image, path: Path, what: str) -> None:
    shape = tuple(int(n) for n in image.shape)
    # (X, Y, Z, 1, ...) is one 3D volume stored with spare axes: accepted, and written back the same way.
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        kind = f"{len(shape)}D"
        raise InputError(f"{path}: {what} is {kind} with shape {shape}; mkdseg needs one 3D volume")
    if min(shape[:3]) < 1:
        raise InputError(f"{path}: {what} has an empty axis, shape {shape}")
    affine = image.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: {what} affine is singular or not finite:\n{affine}")


def _read_voxels(image: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    """Voxel values with the header's scaling applied: integer dtype if unscaled integers, else float32."""
    try:
        if np.issubdtype(image.get_data_dtype(), np.integer) and image.dataobj.slope == 1 and image.dataobj.inter == 0:
            data = np.asarray(image.dataobj)
        else:
            data = image.get_fdata(dtype=np.float32)
    except _READ_ERRORS as e:
        raise InputError(f"{path}: cannot read the {what} voxels, file truncated or corrupt? ({type(e).__name__}: {e})") from e
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(f"{path}: {what} has {int(bad.sum())} NaN or infinite voxels")
    return data


def load_exact(path: str | os.PathLike, what: str = "image") -> tuple[np.ndarray, nib.Nifti1Image]:
    """A 3D NIfTI file's voxel values exactly, for copying it: ``(values [X, Y, Z...], the file's image)``.

    Stored integers stay integers: scaled by the header (``scl_slope``/``scl_inter``, e.g. CT stored as uint16
    with an intercept of -1024), they come back as the smallest of int16/int32 that holds them when every scaled
    value is a whole number, as float32 otherwise; floats come back as float32 (NaN or infinite values are an
    error). Saved as they are (nibabel writes an integer array with slope 1 and intercept 0), Hounsfield units
    stay whole numbers.
    """
    path = Path(path)
    image = _open(path, what)
    _check_3d(image, path, what)
    try:
        stored = image.get_data_dtype()
        if not np.issubdtype(stored, np.integer):
            values = _read_voxels(image, path, what)
        else:
            raw = np.asarray(image.dataobj.get_unscaled())
            values = _scaled(raw, float(image.dataobj.slope), float(image.dataobj.inter))
    except _READ_ERRORS as e:
        raise InputError(f"{path}: cannot read the {what} voxels, file truncated or corrupt? ({type(e).__name__}: {e})") from e
    return values, image


def _scaled(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Stored integers ``raw`` times ``slope`` plus ``inter``: the smallest of int16/int32 holding them when they are
    whole numbers, else float32. Whole slope and intercept (CT's usual 1 and -1024) are applied in integers, so a
    large CT needs no float64 copy."""
    if slope == 1 and inter == 0:
        return raw
    if slope.is_integer() and inter.is_integer():
        info = np.iinfo(raw.dtype)
        bound = max(abs(info.min), abs(info.max)) * abs(slope) + abs(inter)
        wide = np.int32 if bound < 2**31 else np.int64
        values = raw.astype(wide) * wide(slope) + wide(inter)
    else:
        values = raw * np.float64(slope) + np.float64(inter)
        if values.size and not np.array_equal(values, np.rint(values)):
            return values.astype(np.float32)
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    for dtype in (np.int16, np.int32):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return values.astype(dtype, copy=False)
    return values.astype(np.float32)


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3D intensity image: ``(float32 [X, Y, Z] in the file's axes, Geometry)``."""
    path = Path(path)
    image = _open(path, "image")
    _check_3d(image, path, "image")
    data = _read_voxels(image, path, "image").astype(np.float32, copy=False)
    geometry = Geometry.from_image(image, path)
    return data.reshape(geometry.shape3d), geometry


def load_geometry(path: str | os.PathLike, what: str = "image") -> Geometry:
    """Validate a 3D NIfTI file's header and return its geometry, without reading the voxels."""
    path = Path(path)
    image = _open(path, what)
    _check_3d(image, path, what)
    return Geometry.from_image(image, path)


def load_label(path: str | os.PathLike, like: Geometry) -> np.ndarray:
    """Read a label map that must share ``like``'s grid: integer ``[X, Y, Z]`` in the file's axes.

    Float label files are accepted when every value is a whole number (some tools save labels as float).
    """
    path = Path(path)
    image = _open(path, "label")
    _check_3d(image, path, "label")
    if tuple(image.shape) != like.shape:
        raise InputError(f"{path}: label shape {tuple(image.shape)} differs from image {like.path} shape {like.shape}")
    if not np.allclose(image.affine, like.affine, rtol=0, atol=AFFINE_ATOL_MM):
        raise InputError(
            f"{path}: label affine differs from image {like.path} affine "
            f"(max difference {np.abs(image.affine - like.affine).max():.4g} mm):\n{image.affine}\nvs\n{like.affine}"
        )
    data = _read_voxels(image, path, "label")
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(f"{path}: label holds non-integer values, e.g. {data[rounded != data].flat[0]!r}")
        data = rounded.astype(np.int32)
    return data.reshape(like.shape3d)


def save_like(data: np.ndarray, geometry: Geometry, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``data`` (the file's axes, shape ``geometry.shape`` or its 3D part) with ``geometry``'s affine.

    The header is the input's, with the data type of ``data`` and no intensity scaling; qform, sform and
    their codes stay as they were, so nibabel reads back the identical affine. Written to a temporary file beside
    ``path`` and renamed into place: a failure leaves no partial output.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(f"{path}: output must end in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    data = np.asarray(data).reshape(geometry.shape)
    header = geometry.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1, 0)
    header["cal_min"], header["cal_max"] = 0, 0
    # geometry.affine is the header's own best affine, so nibabel leaves qform/sform and codes untouched.
    image = type_of_header(header)(data, geometry.affine, header)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"  # nibabel picks compression by name
    with atomic_path(path, suffix) as tmp:
        nib.save(image, tmp)
        if path.exists() and not overwrite:  # appeared while we were working
            raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    return path


def type_of_header(header: nib.Nifti1Header) -> type:
    """The image class that goes with a header (NIfTI-1 or NIfTI-2)."""
    return nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
