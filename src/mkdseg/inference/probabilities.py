"""Class probabilities written beside a label map (``mkdseg segment --save-probabilities``), as nnU-Net writes them.

``<case>.npz`` beside ``<case>.nii.gz``, written atomically, holding:

- ``probabilities``: float16 ``[C, *scan shape]``, in the scan's own array axes (the label map's), class 0
  background; the ensemble's and mirror images' mean where those were asked for, before post-processing;
  where the model saw nothing (outside the body's or the structures' box) background is 1;
- ``classes``: the class names, ``background`` first; ``codes``: the label value of each class in the
  written label map (the dataset's codes, or the class indices with ``--codes index``).

Read it with ``np.load(path)["probabilities"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mkdseg.data.nifti import Geometry, OutputExistsError, from_canonical
from mkdseg.io import atomic_path
from mkdseg.labels import DataSpec

SUFFIX = ".npz"


def probabilities_path(label_path: str | Path) -> Path:
    """The probability file that goes with a label map: its name with ``.npz`` for ``.nii``/``.nii.gz``.

    >>> probabilities_path("segs/btcv_003.nii.gz"), probabilities_path("seg.nii")
    (PosixPath('segs/btcv_003.npz'), PosixPath('seg.npz'))
    """
    path = Path(label_path)
    ending = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(path.name[: -len(ending)] + SUFFIX)


def save_probabilities(canonical: np.ndarray, geometry: Geometry, spec: DataSpec, path: str | Path,
                       codes: str = "dataset", overwrite: bool = False) -> Path:
    """Write canonical probabilities ``[C, X, Y, Z]`` in the scan's own axes (see the module docstring)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    shape = geometry.shape3d
    out = np.empty((len(canonical), *shape), dtype=np.float16)
    for c, volume in enumerate(canonical):
        out[c] = from_canonical(np.asarray(volume), geometry).reshape(shape)
    values = np.arange(spec.num_classes) if codes == "index" else np.asarray((0, *spec.codes))
    with atomic_path(path, SUFFIX) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, probabilities=out, classes=np.asarray(("background", *spec.structures)), codes=values)
    return path
