"""MM-WHS 2017 scans -> the slice cache: the built-in preset of ``mkdseg preprocess --src``.

Input: a folder of ``{modality}_train_{id}_image.nii.gz`` / ``..._label.nii.gz`` pairs (``.nii`` too).
The structures are the preset's seven (:data:`mkdseg.labels.MMWHS`, codes 205 ... 850 mapped to classes
1..7 in that order); any other code is an error, or background with ``unknown_labels='background'``.
Slices are always transverse (canonical axis 2) according to the file's affine; everything else is the
generic pipeline of :mod:`mkdseg.data.pipeline`. The SIFA-derived test files in
``shared/data/mmwhs_sifa`` are 256x256x3 stacks of *coronal* slices whose identity affine declares
them axial, so they yield their 3 stored slices, recropped at the heart: consistent with what
inference does to the same files, just not anatomically transverse.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdseg.data.cache import SliceCache
from mkdseg.data.nifti import InputError, MissingInputError
from mkdseg.data.pipeline import ScanPair, write_cache
from mkdseg.labels import DEFAULT_MARGIN_MM, MMWHS, preset_structures

CACHE_SOURCE = "mmwhs"
TRANSVERSE = 2
_NAME = re.compile(r"^(?P<modality>[a-z0-9]+)_train_(?P<subject>[A-Za-z0-9-]+)_(?P<kind>image|label)\.nii(\.gz)?$")


def find_pairs(src: str | Path, modality: str) -> list[ScanPair]:
    """The ``{modality}_train_{id}`` image/label pairs in ``src``, sorted by subject id.

    Raises :class:`InputError` naming the file for an image without its label, a label without its
    image, or the same scan stored twice (``.nii`` and ``.nii.gz``).
    """
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in sorted(Path(src).iterdir()):
        match = _NAME.match(path.name)
        if not match or match["modality"] != modality:
            continue
        found = images if match["kind"] == "image" else labels
        if match["subject"] in found:
            raise InputError(f"{path}: the same scan also exists as {found[match['subject']]}; keep one")
        found[match["subject"]] = path
    for subject, image in images.items():
        if subject not in labels:
            raise InputError(f"{image}: no label file {modality}_train_{subject}_label.nii.gz (or .nii) beside it")
    for subject, label in labels.items():
        if subject not in images:
            raise InputError(f"{label}: no image file {modality}_train_{subject}_image.nii.gz (or .nii) beside it")
    return [ScanPair(modality, s, images[s], labels[s]) for s in sorted(images, key=_subject_order)]


def _subject_order(subject: str) -> tuple[int, int | str]:
    return (0, int(subject)) if subject.isdigit() else (1, subject)


def preprocess(src: str | Path, out: str | Path, target: str = "ct", assistant: str | None = "mr",
               image_size: int = 256, unknown_labels: str = "error", overwrite: bool = False,
               progress: bool = True, margin_mm: float = DEFAULT_MARGIN_MM, field_of_view: str = "body") -> SliceCache:
    """Preprocess every ``target`` and ``assistant`` training pair in ``src`` into the cache at ``out``
    (resumable; see :func:`mkdseg.data.pipeline.write_cache`). Returns the saved cache."""
    if assistant == target:
        raise ValueError(f"assistant and target must differ, both are {target!r}")
    src = Path(src)
    if not src.is_dir():
        raise MissingInputError(f"{src}: source folder not found")
    modalities = [m for m in (target, assistant) if m]
    pairs = []
    for modality in modalities:
        found = find_pairs(src, modality)
        if not found:
            raise InputError(f"{src}: no {modality}_train_<id>_image.nii.gz / _label.nii.gz pairs in this folder")
        pairs += found
    roles = {"target": target, **({"assistant": assistant} if assistant else {})}
    return write_cache(pairs, out, source=CACHE_SOURCE, structures=preset_structures(MMWHS, modalities), roles=roles,
                       slice_axis=TRANSVERSE, image_size=image_size, margin_mm=margin_mm, field_of_view=field_of_view,
                       unknown_labels=unknown_labels, overwrite=overwrite, progress=progress)
