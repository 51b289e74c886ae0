"""Label maps written in the geometry of the scan: ``mkdseg segment``'s per-file work and the back end
of ``mkdseg predict``'s writer (:class:`mkdseg.callbacks.VolumePredictionWriter`).

The volume is reoriented to canonical RAS for prediction and the label map reoriented back, so the
output has the input's shape, affine, qform/sform and orientation whatever they are. Labels are written
as the target dataset's own codes (``codes="dataset"``, the default), as the codes its source used before
conversion where the dataset recorded them (``"original"``: MM-WHS's 205 ... 850), or as class indices (``"index"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mkdseg.data.cache import VolumeRecord
from mkdseg.data.nifti import (
    InputError,
    OutputExistsError,
    from_canonical,
    is_nifti_path,
    load_image,
    save_like,
    to_canonical,
)
from mkdseg.inference.device import SlicePredictor
from mkdseg import postprocess
from mkdseg.inference.probabilities import probabilities_path
from mkdseg.inference.probabilities import save_probabilities as write_probabilities
from mkdseg.data.canvas import ScanCanvas
from mkdseg.inference.regions import segment_canonical
from mkdseg.labels import DataSpec

CODE_CHOICES = ("dataset", "index", "original")


def output_values(classes: np.ndarray, spec: DataSpec, codes: str = "dataset") -> np.ndarray:
    """Class indices as written: the target dataset's codes (``dataset``), its source's (``original``; ValueError
    if the dataset recorded none) or the indices (``index``)."""
    if codes == "original":
        spec = spec.with_original_codes()
    return classes.astype(np.uint8) if codes == "index" else spec.classes_to_codes(classes)


def segment_file(image_path: str | Path, output_path: str | Path, predict: SlicePredictor, spec: DataSpec,
                 codes: str = "dataset", overwrite: bool = False, batch_size: int = 8, crop: bool = True,
                 progress: bool = False, orientation: str | None = None, keep_largest: Sequence[int] = (),
                 save_probabilities: bool = False) -> Path:
    """Segment one NIfTI scan and write its label map (the target dataset's codes, int16; or class
    indices, uint8) with the input's shape, affine and header. Written atomically; an existing output
    is refused unless ``overwrite``. ``orientation``: the array's true orientation if the header's is wrong
    (as given to ``mkdseg preprocess``). ``keep_largest``: class indices reduced to their largest connected
    component (:mod:`mkdseg.postprocess`). ``save_probabilities``: also write the class probabilities
    beside the label map (:mod:`mkdseg.inference.probabilities`)."""
    if codes not in CODE_CHOICES:
        raise ValueError(f"codes must be one of {CODE_CHOICES}, got {codes!r}")
    if codes == "original":  # the original codes are this spec's codes: in the label map and the probabilities
        try:
            spec, codes = spec.with_original_codes(), "dataset"
        except ValueError as e:
            raise InputError(str(e)) from e
    output_path = Path(output_path)
    if not is_nifti_path(output_path):
        raise InputError(f"{output_path}: output must end in .nii or .nii.gz")
    if output_path.exists() and output_path.resolve() == Path(image_path).resolve():
        raise InputError(f"{output_path}: output would replace the input scan; choose another output path")
    outputs = [output_path, probabilities_path(output_path)] if save_probabilities else [output_path]
    for path in outputs:
        if path.exists() and not overwrite:  # fail before the expensive part
            raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    image, geometry = load_image(image_path)
    geometry = geometry.declared_as(orientation)
    canonical = to_canonical(image, geometry)
    result = segment_canonical(canonical, geometry.canonical_spacing, predict, spec, batch_size, crop,
                               progress=progress, desc=Path(image_path).name, probabilities=save_probabilities)
    classes, probabilities = result if save_probabilities else (result, None)
    del image, canonical
    if keep_largest:
        classes = postprocess.keep_largest(classes, keep_largest)
    if probabilities is not None:
        write_probabilities(probabilities, geometry, spec, outputs[1], "index" if codes == "index" else "dataset", overwrite)
        del probabilities
    return save_like(output_values(from_canonical(classes, geometry), spec, codes), geometry, output_path, overwrite=overwrite)


def write_cached_prediction(probs: torch.Tensor, record: VolumeRecord, spec: DataSpec, path: str | Path,
                            codes: str = "dataset", keep_largest: Sequence[int] = ()) -> Path:
    """Write the slice probabilities ``[S, C, size, size]`` of a cached volume as a label map in the
    geometry of the scan it was preprocessed from (:class:`ScanCanvas`); ``keep_largest``: class indices
    reduced to their largest connected component (:mod:`mkdseg.postprocess`)."""
    canvas = ScanCanvas(record, spec)
    canvas.paste(probs, np.arange(len(probs)))
    classes, geometry = canvas.labels()
    if keep_largest:
        classes = postprocess.keep_largest(classes, keep_largest)
    return save_like(output_values(classes, spec, codes), geometry, path, overwrite=True)
