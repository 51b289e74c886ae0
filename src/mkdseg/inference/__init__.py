"""Whole-volume prediction in the input's own geometry (``mkdseg segment``, ``mkdseg predict``).

One job per module:

- :mod:`~mkdseg.inference.device`: ``--device``, ``--precision`` and :class:`SlicePredictor`, which runs
  the model (or an ensemble's models, each with test-time mirroring: :mod:`mkdseg.mirroring`) on batches
  of slices there;
- :mod:`~mkdseg.inference.checkpoint`: :func:`load_segmentor`, which checkpoints can segment, and
  :func:`load_segmentors`, which can be ensembled;
- :mod:`~mkdseg.inference.regions`: the two-pass region search (locate the structures on sparse whole
  slices, then segment the box around them), arrays in and out;
- :mod:`~mkdseg.inference.writer`: label maps written in the scan's geometry and codes, for a NIfTI scan
  (:func:`segment_file`) or a cached volume (:func:`write_cached_prediction`, ``mkdseg predict``);
- :mod:`~mkdseg.inference.probabilities`: the class probabilities beside a label map (``--save-probabilities``);
- :mod:`~mkdseg.inference.cli`: the ``mkdseg segment`` command and its job runner.

Post-processing (each structure's largest connected component, where validation said so) is
:mod:`mkdseg.postprocess`, shared with the training methods' test.

Every public name is importable from here. To replace one of the search's steps (a test, a benchmark counting slices), patch it where it is looked
up, e.g. ``mkdseg.inference.regions.predict_box``.
"""

from mkdseg.inference.checkpoint import load_segmentor, load_segmentors
from mkdseg.inference.cli import build_parser, segment_main
from mkdseg.inference.device import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    SlicePredictor,
    resolve_device,
    resolve_precision,
)
from mkdseg.inference.probabilities import probabilities_path, save_probabilities
from mkdseg.inference.regions import (
    LOCATE_STEP_MM,
    largest_component,
    locate_structures,
    paste_probabilities,
    predict_box,
    segment_canonical,
)
from mkdseg.inference.writer import CODE_CHOICES, output_values, segment_file, write_cached_prediction

__all__ = [
    "CODE_CHOICES",
    "DEVICE_CHOICES",
    "LOCATE_STEP_MM",
    "PRECISION_CHOICES",
    "SlicePredictor",
    "build_parser",
    "largest_component",
    "load_segmentor",
    "load_segmentors",
    "locate_structures",
    "output_values",
    "paste_probabilities",
    "predict_box",
    "probabilities_path",
    "resolve_device",
    "resolve_precision",
    "save_probabilities",
    "segment_canonical",
    "segment_file",
    "segment_main",
    "write_cached_prediction",
]
