"""The scan a cached volume was cut from: its geometry (:func:`record_geometry`), and its label map filled back in
from slice probabilities (:class:`ScanCanvas`, :func:`paste_probabilities`).

What validation and test score (each slice's prediction put back into the scan's own grid) and what ``mkdseg
predict`` and ``mkdseg segment`` write are the same pasting, so it lives here, below both the methods and inference.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mkdseg.data.cache import VolumeRecord
from mkdseg.data.nifti import Geometry, from_canonical
from mkdseg.data.roi import Box, from_slicing_view, paste_slices, resize_image, slicing_view
from mkdseg.labels import DataSpec


def paste_probabilities(probs: torch.Tensor, box: Box, out: np.ndarray, out_z: np.ndarray,
                        probabilities: np.ndarray | None = None) -> None:
    """Resize slice probabilities ``[S, C, size, size]`` to the box's in-plane window, take the class
    with the highest, and write it into ``out[:, :, out_z]`` (the part of the box inside ``out``); the
    resized probabilities themselves into ``probabilities[c, :, :, out_z]`` if given (``[C, X, Y, *]``)."""
    resized = resize_image(probs, box.in_plane)
    # max(1).indices: the argmax, at a third of argmax(1)'s cost on [B, C, 512, 512] (torch 2.13, CPU)
    labels = resized.max(1).indices.to(torch.uint8).numpy()
    paste_slices(out, labels, box, out_z)
    if probabilities is not None:
        for c in range(probabilities.shape[0]):
            paste_slices(probabilities[c], resized[:, c].numpy().astype(probabilities.dtype), box, out_z)



def record_geometry(record: VolumeRecord, shape: tuple[int, ...] | None = None) -> Geometry:
    """The geometry of the scan a cached volume was preprocessed from (``shape``: where the record has none,
    as the phantom's, whose cached grid is its original grid)."""
    affine = np.asarray(record.affine if record.affine is not None else np.eye(4), dtype=np.float64)
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine).header
    shape = tuple(record.original_shape) if record.original_shape else shape
    return Geometry(Path(record.image_file), shape, affine, header).declared_as(record.extra.get("declared_orientation"))


class ScanCanvas:
    """The label map of the scan a cached volume was preprocessed from, filled batch by batch from slice
    probabilities ``[S, C, size, size]``: each slice back into its box (:attr:`VolumeRecord.crop_box`) in
    the scan's grid, the rest background. Records without a crop box are their own original grid."""

    def __init__(self, record: VolumeRecord, spec: DataSpec):
        self.record, self.spec = record, spec
        self._slices: list[np.ndarray] = []  # without a crop box: the cached slices' labels, in order
        self._view = None
        if record.crop_box is not None:
            canonical = record_geometry(record).canonical_shape
            self._view = np.zeros(slicing_view(np.empty(canonical, bool), spec.slice_axis).shape, dtype=np.uint8)
            self._box = Box(*(tuple(r) for r in record.crop_box))

    def paste(self, probs: torch.Tensor, positions: np.ndarray) -> None:
        """The probabilities of the cached slices at ``positions`` (indices into the cached volume)."""
        if self._view is None:
            self._slices.append(probs.max(1).indices.to(torch.uint8).numpy())
        else:
            paste_probabilities(probs, self._box, self._view, np.asarray(self.record.slice_indices)[positions])

    def labels(self) -> tuple[np.ndarray, Geometry]:
        """Class indices (uint8, in the file's axes and shape) and the scan's geometry."""
        if self._view is None:
            stack = np.concatenate(self._slices)
            geometry = record_geometry(self.record, stack.shape)
            return stack.reshape(geometry.shape), geometry
        geometry = record_geometry(self.record)
        return from_canonical(np.ascontiguousarray(from_slicing_view(self._view, self.spec.slice_axis)), geometry), geometry
