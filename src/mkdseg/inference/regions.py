"""From a canonical volume of raw intensities to its class labels: the field of view the model was trained on.

A scan to segment is whole and has no label. How it is cut follows what the checkpoint's training slices
showed (``model.spec.field_of_view``, :mod:`mkdseg.data.pipeline`):

- ``body`` (``preprocess``'s default): **one pass**. Every slice is cut to the body's intensity box
  (:func:`mkdseg.data.roi.body_box`, found without a label exactly as preprocessing found it) and
  segmented; the probabilities are resized back to the scan's own grid. The model has seen whole slices
  with and without the structures in training, so it both finds them and leaves the rest background.
- ``structures`` (the papers' protocol: training slices cut around the labelled structures): **two
  passes**. 1. *Locate*: about one slice every ``LOCATE_STEP_MM`` = 5 mm is segmented whole (its full
  field of view, made square); of each structure the largest 3D connected component is kept, and the box
  around all of them is the region of interest. 2. *Segment*: that box, grown by the training margin and
  made square in mm exactly as preprocessing crops (:func:`mkdseg.data.roi.square_box`), is segmented on
  every slice it spans; everything outside it is background. A network that has only seen label-cut
  slices locates poorly on whole ones: the worst scans lose whole organs here (docs/results.md).

``crop=False`` (``--no-crop``) runs one pass over whole slices instead, for scans that are already cropped.

Intensities are normalised with the same function and window rule as preprocessing
(:mod:`mkdseg.data.intensity`), over the whole canonical volume. Probabilities exist only one batch of
slices at a time; the volume-sized arrays are the input and the uint8 label map (and, only when they are
asked for, ``segment --save-probabilities``, a float16 canvas of every class's probabilities).

Why not MONAI's ``SliceInferer`` / ``sliding_window_inference``: the network's window *is* the whole
(resized) slice, so a sliding window has nothing to slide and would only add its weighting and copies;
and both return the probabilities of every slice at once (``[1, C, S, S, Z]``, hundreds of MB for a
CT), where :func:`predict_box` turns each batch into labels, pasted into the box, before the next.
The slices are not a sub-volume of the scan either: each is the box's window, padded and resized
(:func:`mkdseg.data.roi.network_input`), exactly as preprocessing cuts the training slices.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

from mkdseg.data.canvas import paste_probabilities
from mkdseg.data.intensity import intensity_window
from mkdseg.data.roi import (
    Box,
    body_box,
    bounding_ranges,
    from_slicing_view,
    network_input,
    slicing_spacing,
    slicing_view,
    square_box,
    whole_slice_box,
)
from mkdseg.inference.device import SlicePredictor
from mkdseg.labels import DataSpec
from mkdseg.postprocess import largest_component

LOCATE_STEP_MM = 5.0  # slice spacing of the locating pass; an organ spans several such slices


def _batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def predict_box(volume: np.ndarray, window: tuple[float, float], box: Box, z: np.ndarray, predict: SlicePredictor,
                out: np.ndarray, out_z: np.ndarray, batch_size: int, bar: tqdm | None = None,
                probabilities: np.ndarray | None = None) -> None:
    """Segment the box's in-plane window on slices ``z`` of ``volume`` ``[X, Y, Z]`` (canonical, raw
    intensities); write the class labels into ``out[:, :, out_z]`` (``out`` uint8 ``[X, Y, *]``), and the
    probabilities into ``probabilities[:, :, :, out_z]`` if given (``[C, X, Y, *]``)."""
    for zb, ob in zip(_batches(z, batch_size), _batches(out_z, batch_size)):
        probs = predict(network_input(volume, window, box, predict.image_size, zb)[:, None])
        paste_probabilities(probs, box, out, ob, probabilities)
        if bar is not None:
            bar.update(len(zb))


def locate_structures(coarse: np.ndarray, z_sampled: np.ndarray, n_slices: int) -> tuple[tuple[int, int], ...] | None:
    """Bounding ranges (x, y, z) around the largest 3D component of every structure in the coarse label
    map ``[X, Y, K]``, whose K slices are the volume's slices ``z_sampled``; the z range covers the
    unsampled gaps. ``None`` if nothing was found."""
    classes = [int(c) for c in np.unique(coarse) if c]
    if not classes:
        return None
    kept = np.zeros(coarse.shape, dtype=bool)
    for c in classes:
        kept |= largest_component(coarse == c)
    (x0, x1), (y0, y1), (k0, k1) = bounding_ranges(kept)
    gap = int(z_sampled[1] - z_sampled[0]) if len(z_sampled) > 1 else 1
    z0 = max(0, int(z_sampled[k0]) - gap + 1)
    z1 = min(n_slices, int(z_sampled[k1 - 1]) + gap)
    return (x0, x1), (y0, y1), (z0, z1)


def segment_canonical(volume: np.ndarray, spacing: tuple[float, float, float], predict: SlicePredictor,
                      spec: DataSpec, batch_size: int = 8, crop: bool = True, progress: bool = False,
                      desc: str = "segment", probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class labels ``uint8 [X, Y, Z]`` for a canonical (RAS) volume of raw intensities ``[X, Y, Z]``
    with voxel size ``spacing`` (mm, canonical axes), sliced along ``spec.slice_axis``. See the module
    docstring for the two passes. ``probabilities``: also return the class probabilities, float16
    ``[C, X, Y, Z]`` (outside the segmented box: background 1), a canvas of ``C`` volumes kept only then."""
    view = slicing_view(volume, spec.slice_axis)
    canvas = np.zeros((spec.num_classes, *view.shape), dtype=np.float16) if probabilities else None
    if canvas is not None:
        canvas[0] = 1.0
    labels = _segment_view(view, slicing_spacing(spacing, spec.slice_axis), predict, spec, batch_size,
                           crop, progress, desc, canvas)
    labels = from_slicing_view(labels, spec.slice_axis)
    if canvas is None:
        return labels
    return labels, np.moveaxis(canvas, 3, 1 + spec.slice_axis)


def _segment_view(volume: np.ndarray, spacing: tuple[float, float, float], predict: SlicePredictor, spec: DataSpec,
                  batch_size: int, crop: bool, progress: bool, desc: str, canvas: np.ndarray | None = None) -> np.ndarray:
    """:func:`segment_canonical` on a volume whose slice axis is already last."""
    shape = volume.shape
    window = intensity_window(volume)
    labels = np.zeros(shape, dtype=np.uint8)
    all_z = np.arange(shape[2])
    with tqdm(total=0, desc=desc, unit="slice", disable=not progress, leave=False) as bar:
        if not crop or spec.field_of_view == "body":
            bar.total = shape[2]
            box = body_box(volume, window, spacing) if crop else whole_slice_box(shape, spacing)
            predict_box(volume, window, box, all_z, predict, labels, all_z, batch_size, bar, canvas)
            return labels
        whole = whole_slice_box(shape, spacing)
        step = max(1, int(round(LOCATE_STEP_MM / spacing[2])))
        sampled = all_z[step // 2::step] if shape[2] > step else all_z[shape[2] // 2:shape[2] // 2 + 1]
        coarse = np.zeros(shape[:2] + (len(sampled),), dtype=np.uint8)
        bar.total = len(sampled)
        predict_box(volume, window, whole, sampled, predict, coarse, np.arange(len(sampled)), batch_size, bar)
        found = locate_structures(coarse, sampled, shape[2])
        if found is None:
            return labels
        box = square_box(found, spacing, shape, spec.margin_mm)
        z = np.arange(*box.z)
        bar.total += len(z)
        bar.refresh()
        predict_box(volume, window, box, z, predict, labels, z, batch_size, bar, canvas)
    return labels
