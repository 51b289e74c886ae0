"""MM-WHS 2017 scans -> the slice cache (``mkdseg preprocess``).

Input: a folder of ``{modality}_train_{id}_image.nii.gz`` / ``..._label.nii.gz`` pairs (``.nii`` too).
Per volume (:func:`preprocess_volume`):

1. read and validate image and label (:mod:`mkdseg.data.nifti`), reorient both to canonical RAS;
2. map MM-WHS codes to classes 1..7 (:mod:`mkdseg.labels`); unknown codes raise, or become background;
3. normalise intensities over the whole volume to [-1, 1] (:mod:`mkdseg.data.intensity`);
4. crop at the heart: bounding box of the label plus ``margin_mm`` on every side, made square in mm
   in-plane (:mod:`mkdseg.data.roi`), keeping only the transverse slices (canonical axis 2) inside it;
5. resize each slice to ``image_size`` (bilinear image, nearest label) and write it to the cache.

Slices are always transverse according to the file's affine. The SIFA-derived test files in
``shared/data/mmwhs_sifa`` are 256x256x3 stacks of *coronal* slices whose identity affine declares
them axial, so they yield their 3 stored slices, recropped at the heart: consistent with what
inference does to the same files, just not anatomically transverse.

The cache is written one complete volume at a time and its manifest saved after each, so an
interrupted run keeps what it finished and a re-run with the same parameters skips those volumes.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.intensity import intensity_window
from mkdseg.data.nifti import (
    Geometry,
    InputError,
    MissingInputError,
    load_geometry,
    load_image,
    load_label,
    to_canonical,
)
from mkdseg.data.roi import HEART_MARGIN_MM, bounding_ranges, crop_slices, network_input, resize_label, square_box
from mkdseg.labels import codes_to_classes

CACHE_SOURCE = "mmwhs"
# Bump when the per-volume processing changes, so old caches are not silently reused.
PREPROCESS_VERSION = 1
UNKNOWN_LABEL_CHOICES = ("error", "background")
_NAME = re.compile(r"^(?P<modality>[a-z0-9]+)_train_(?P<subject>[A-Za-z0-9-]+)_(?P<kind>image|label)\.nii(\.gz)?$")


@dataclass(frozen=True)
class ScanPair:
    modality: str
    subject: str
    image: Path
    label: Path


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


@dataclass
class PreprocessedVolume:
    """One volume ready for the cache: ``image`` float32 ``[S, H, W]`` in [-1, 1], ``label`` uint8 classes."""

    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    box: list[list[int]]  # canonical [[x0, x1], [y0, y1], [z0, z1]]
    spacing: tuple[float, float, float]  # mm of the cached grid: (slice, row, col)
    window: tuple[float, float]


def preprocess_volume(image_path: Path, label_path: Path, image_size: int = 256, margin_mm: float = HEART_MARGIN_MM,
                      unknown_labels: str = "error") -> PreprocessedVolume:
    """Read, validate, reorient, normalise, crop at the heart and resize one image/label pair."""
    codes, geometry = _read_pair(image_path, label_path)
    codes_c = to_canonical(codes, geometry)
    # Map codes inside the bounding box of non-zero codes only: it holds every labelled voxel, and
    # mapping a few million voxels instead of a whole 512x512x300 volume is ~10x faster.
    nonzero = bounding_ranges(codes_c != 0)
    if nonzero is None:
        raise InputError(f"{label_path}: label is empty (no structure labelled)")
    around = tuple(slice(a, b) for a, b in nonzero)
    try:
        classes_inner = codes_to_classes(codes_c[around], unknown=unknown_labels, source=str(label_path))
    except ValueError as e:
        raise InputError(str(e)) from e
    classes = np.zeros(codes_c.shape, dtype=np.uint8)
    classes[around] = classes_inner
    heart = bounding_ranges(classes_inner > 0)
    if heart is None:
        raise InputError(f"{label_path}: no MM-WHS structure labelled (all codes mapped to background)")
    heart = tuple((a + s.start, b + s.start) for (a, b), s in zip(heart, around))

    image, _ = load_image(image_path)
    image_c = to_canonical(image, geometry)
    spacing = geometry.canonical_spacing
    box = square_box(heart, spacing, image_c.shape, margin_mm)
    window = intensity_window(image_c)  # over the whole volume, as inference must (it has no crop yet)
    image_stack = network_input(image_c, window, box, image_size).numpy()
    label_stack = resize_label(crop_slices(classes, box, pad_value=0), image_size)
    h, w = box.in_plane
    cached_spacing = (spacing[2], h * spacing[0] / image_size, w * spacing[1] / image_size)
    return PreprocessedVolume(image_stack, label_stack, geometry, box.as_list(), cached_spacing, window)


def _read_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, Geometry]:
    """The label's codes and the image's geometry; checking the label against the image header first
    costs no image voxels."""
    geometry = load_geometry(image_path)
    return load_label(label_path, like=geometry), geometry


def preprocess(src: str | Path, out: str | Path, target: str = "ct", assistant: str | None = "mr",
               image_size: int = 256, unknown_labels: str = "error", overwrite: bool = False,
               progress: bool = True, margin_mm: float = HEART_MARGIN_MM) -> SliceCache:
    """Preprocess every ``target`` and ``assistant`` training pair in ``src`` into the cache at ``out``.

    Volumes already in ``out``'s manifest with the same parameters and source files are kept (an
    interrupted run resumes); other parameters need ``overwrite=True``, which rebuilds the cache from
    this run's volumes only. Returns the saved cache.
    """
    if unknown_labels not in UNKNOWN_LABEL_CHOICES:
        raise ValueError(f"unknown_labels must be one of {UNKNOWN_LABEL_CHOICES}, got {unknown_labels!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
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

    cache = _open_cache(out, overwrite)
    params = {"version": PREPROCESS_VERSION, "image_size": image_size, "margin_mm": margin_mm,
              "unknown_labels": unknown_labels}
    todo = [p for p in pairs if overwrite or not _is_done(cache, p, params)]
    stale = [p for p in todo if cache.has(p.modality, p.subject)]
    if stale and not overwrite:
        first = cache.records[f"{stale[0].modality}/{stale[0].subject}"]
        raise InputError(
            f"{cache.root}: holds {len(stale)} volume(s) made with other parameters or source files, e.g. "
            f"{first.key} with {first.extra.get('preprocess')} (now {params}); pass overwrite=True / --overwrite"
        )
    if overwrite:
        cache.records.clear()  # the manifest from now on lists only volumes of this run
    for pair in tqdm(todo, desc="preprocess", unit="vol", disable=not progress):
        done = preprocess_volume(pair.image, pair.label, image_size, margin_mm, unknown_labels)
        cache.write_volume(_record(pair, done, params), done.image, done.label)
        cache.save()  # after every volume: the manifest never lists a volume that is not complete
    cache.save()
    return cache


def _open_cache(out: str | Path, overwrite: bool) -> SliceCache:
    cache = SliceCache(out, source=CACHE_SOURCE)
    if cache.exists and cache.source != CACHE_SOURCE and not overwrite:
        raise InputError(f"{cache.root}: holds a {cache.source!r} cache, not MM-WHS; choose another --out or --overwrite")
    cache.source = CACHE_SOURCE
    return cache


def _is_done(cache: SliceCache, pair: ScanPair, params: dict) -> bool:
    if not cache.has(pair.modality, pair.subject):
        return False
    record = cache.records[f"{pair.modality}/{pair.subject}"]
    return (record.extra.get("preprocess") == params
            and record.extra.get("source_image") == pair.image.name
            and record.extra.get("source_bytes") == pair.image.stat().st_size
            and all((cache.root / f).is_file() for f in (record.image_file, record.label_file) if f))


def _record(pair: ScanPair, done: PreprocessedVolume, params: dict) -> VolumeRecord:
    geometry = done.geometry
    z0, z1 = done.box[2]
    return VolumeRecord(
        subject=pair.subject,
        modality=pair.modality,
        n_slices=int(done.image.shape[0]),
        image_file="",  # set by SliceCache.write_volume
        spacing=tuple(float(s) for s in done.spacing),
        original_shape=tuple(geometry.shape),
        affine=geometry.affine.tolist(),
        crop_box=done.box,
        slice_indices=list(range(z0, z1)),
        extra={
            "orientation": geometry.axcodes,  # of the file; crop_box and slice_indices are canonical RAS
            "canonical": "RAS",
            "original_spacing": list(geometry.spacing),
            "intensity_window": list(done.window),
            "source_image": pair.image.name,
            "source_label": pair.label.name,
            "source_bytes": pair.image.stat().st_size,
            "preprocess": params,
        },
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkdseg preprocess",
        description="Turn MM-WHS {ct,mr}_train_<id>_{image,label}.nii.gz pairs into mkdseg's slice cache "
                    "(canonical RAS, transverse slices cropped at the heart, intensities in [-1, 1]).",
    )
    parser.add_argument("--src", required=True, type=Path, help="folder with the MM-WHS NIfTI files")
    parser.add_argument("--out", required=True, type=Path, help="cache folder to create or complete")
    parser.add_argument("--target", default="ct", help="target modality prefix (default: ct)")
    parser.add_argument("--assistant", default="mr", help="assistant modality prefix, or 'none' (default: mr)")
    parser.add_argument("--image-size", type=int, default=256, help="slice size after resizing (default: 256)")
    parser.add_argument("--margin-mm", type=float, default=HEART_MARGIN_MM,
                        help=f"context around the heart box in mm (default: {HEART_MARGIN_MM})")
    parser.add_argument("--unknown-labels", choices=UNKNOWN_LABEL_CHOICES, default="error",
                        help="label codes that are not MM-WHS codes: stop with an error, or map to background")
    parser.add_argument("--overwrite", action="store_true", help="rebuild every volume, even if already cached")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mkdseg preprocess``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    assistant = None if args.assistant.lower() == "none" else args.assistant
    try:
        cache = preprocess(args.src, args.out, target=args.target, assistant=assistant, image_size=args.image_size,
                           unknown_labels=args.unknown_labels, overwrite=args.overwrite,
                           progress=not args.no_progress, margin_mm=args.margin_mm)
    except (InputError, ValueError, OSError) as e:
        print(f"mkdseg preprocess: error: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{len(cache.volumes(m))} {m}" for m in (args.target, assistant) if m)
    print(f"mkdseg preprocess: {counts} volumes in {cache.root}")
    return 0
