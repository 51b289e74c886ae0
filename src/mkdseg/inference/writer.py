"""Label maps written in the geometry of the scan: ``mkdseg segment``'s per-file work and the back end
of ``mkdseg predict``'s writer (:class:`mkdseg.prediction_writer.VolumePredictionWriter`).

The volume is reoriented to canonical RAS for prediction and the label map reoriented back, so the
output has the input's shape, affine, qform/sform and orientation whatever they are. Labels are written
as the target dataset's own codes (``codes="dataset"``, the default) or as class indices (``"index"``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mkdseg.data.cache import VolumeRecord
from mkdseg.data.nifti import (
    Geometry,
    InputError,
    OutputExistsError,
    from_canonical,
    is_nifti_path,
    load_image,
    save_like,
    to_canonical,
)
from mkdseg.data.roi import Box, from_slicing_view, slicing_view
from mkdseg.inference.device import SlicePredictor
from mkdseg.inference.regions import paste_probabilities, segment_canonical
from mkdseg.labels import DataSpec

CODE_CHOICES = ("dataset", "index", "mmwhs")  # mmwhs: the name of `dataset` before label sets (MM-WHS codes)


def output_values(classes: np.ndarray, spec: DataSpec, codes: str = "dataset") -> np.ndarray:
    """Class indices as written: the target dataset's codes (``dataset``) or the indices (``index``)."""
    return classes.astype(np.uint8) if codes == "index" else spec.classes_to_codes(classes)


def segment_file(image_path: str | Path, output_path: str | Path, predict: SlicePredictor, spec: DataSpec,
                 codes: str = "dataset", overwrite: bool = False, batch_size: int = 8, crop: bool = True,
                 progress: bool = False, orientation: str | None = None) -> Path:
    """Segment one NIfTI scan and write its label map (the target dataset's codes, int16; or class
    indices, uint8) with the input's shape, affine and header. Written atomically; an existing output
    is refused unless ``overwrite``. ``orientation``: the array's true orientation if the header's is wrong
    (as given to ``mkdseg preprocess``)."""
    if codes not in CODE_CHOICES:
        raise ValueError(f"codes must be one of {CODE_CHOICES}, got {codes!r}")
    output_path = Path(output_path)
    if not is_nifti_path(output_path):
        raise InputError(f"{output_path}: output must end in .nii or .nii.gz")
    if output_path.exists() and output_path.resolve() == Path(image_path).resolve():
        raise InputError(f"{output_path}: output would replace the input scan; choose another output path")
    if output_path.exists() and not overwrite:  # fail before the expensive part
        raise OutputExistsError(f"{output_path}: output exists; pass --overwrite to replace it")
    image, geometry = load_image(image_path)
    geometry = geometry.declared_as(orientation)
    canonical = to_canonical(image, geometry)
    classes = segment_canonical(canonical, geometry.canonical_spacing, predict, spec, batch_size, crop,
                                progress=progress, desc=Path(image_path).name)
    del image, canonical
    return save_like(output_values(from_canonical(classes, geometry), spec, codes), geometry, output_path, overwrite=overwrite)


def write_cached_prediction(probs: torch.Tensor, record: VolumeRecord, spec: DataSpec, path: str | Path,
                            codes: str = "dataset") -> Path:
    """Write the slice probabilities ``[S, C, size, size]`` of a cached volume as a label map in the
    geometry of the scan it was preprocessed from (shape and affine from ``record``): each slice back
    to its crop box, the rest background, reoriented to the file's axes. Records without a crop box
    (the phantom) are their own original grid."""
    affine = np.asarray(record.affine if record.affine is not None else np.eye(4), dtype=np.float64)
    shape = tuple(record.original_shape) if record.original_shape else tuple(probs.shape[:1] + probs.shape[2:])
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine).header
    geometry = Geometry(Path(record.image_file), shape, affine, header).declared_as(record.extra.get("declared_orientation"))
    if record.crop_box is None:  # cached grid == original grid
        classes = probs.max(1).indices.to(torch.uint8).numpy().reshape(shape)
    else:
        view = np.zeros(slicing_view(np.empty(geometry.canonical_shape, bool), spec.slice_axis).shape, dtype=np.uint8)
        paste_probabilities(probs, Box(*(tuple(r) for r in record.crop_box)), view, np.asarray(record.slice_indices))
        classes = from_canonical(np.ascontiguousarray(from_slicing_view(view, spec.slice_axis)), geometry)
    return save_like(output_values(classes, spec, codes), geometry, path, overwrite=True)
