"""Labelled NIfTI scans -> the slice cache, for any structure set (``mkdseg preprocess``).

Per volume (:func:`preprocess_volume`):

1. read and validate image and label (:mod:`mkdseg.data.nifti`) and reorient both to canonical RAS, so
   that every dataset, whatever its stored orientation (LPS CT, LAS MR, ...), shows the anatomy the same
   way round. The orientation is the header's, unless the dataset's is declared (``orientations``): for
   files whose header is known to be wrong;
2. map the dataset's label codes to the run's classes (:func:`mkdseg.labels.codes_to_classes`): declared
   labels the run does not segment become background, undeclared values raise (or become background);
3. normalise intensities over the whole volume to [-1, 1] (:mod:`mkdseg.data.intensity`);
4. move the slice axis last (:func:`mkdseg.data.roi.slicing_view`) and cut the field of view
   (:mod:`mkdseg.data.roi`): ``body`` (the default) keeps every slice, cut in-plane to the body's intensity
   box, exactly as ``mkdseg segment`` cuts a scan that has no label; ``structures`` (the papers' protocol)
   keeps the structures' bounding box plus ``margin_mm`` on every side, made square in mm in-plane, and
   only the slices inside it;
5. resize each slice to ``image_size`` (bilinear image, nearest label).

:func:`write_cache` writes volumes one at a time and saves the manifest after each, so an interrupted
run keeps what it finished and a re-run with the same parameters resumes. ``overwrite`` rebuilds in a
fresh folder and swaps it in only when complete: a failure leaves the old cache as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.intensity import intensity_window
from mkdseg.data.nifti import Geometry, InputError, load_geometry, load_image, load_label, to_canonical
from mkdseg.data.roi import (
    CANONICAL_PLANES,
    body_box,
    bounding_ranges,
    crop_slices,
    network_input,
    resize_label,
    slicing_spacing,
    slicing_view,
    square_box,
)
from mkdseg.labels import DEFAULT_MARGIN_MM, FIELDS_OF_VIEW, Structure, code_lut, codes_to_classes

UNKNOWN_LABEL_CHOICES = ("error", "background")


@dataclass(frozen=True)
class ScanPair:
    """One labelled scan of one modality's dataset."""

    modality: str
    subject: str
    image: Path
    label: Path


@dataclass
class PreprocessedVolume:
    """One volume ready for the cache: ``image`` float32 ``[S, H, W]`` in [-1, 1], ``label`` uint8 classes."""

    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    box: list[list[int]]  # [[x0, x1], [y0, y1], [z0, z1]] of the canonical volume with the slice axis last
    spacing: tuple[float, float, float]  # mm of the cached grid: (slice, row, col)
    window: tuple[float, float]


def preprocess_volume(image_path: Path, label_path: Path, lut: Mapping[int, int], declared: Sequence[int] | None = None,
                      slice_axis: int = 2, image_size: int = 256, margin_mm: float = DEFAULT_MARGIN_MM,
                      unknown_labels: str = "error", orientation: str | None = None,
                      field_of_view: str = "body") -> PreprocessedVolume:
    """Read, validate, reorient, map labels, normalise, cut the field of view and resize one pair.
    ``orientation``: the arrays' true orientation (e.g. ``"LAS"``) where the header's is wrong."""
    # checking the label against the header first costs no image voxels
    geometry = load_geometry(image_path).declared_as(orientation)
    codes = slicing_view(to_canonical(load_label(label_path, like=geometry), geometry), slice_axis)
    # Map codes inside the bounding box of non-zero codes only: it holds every labelled voxel, and
    # mapping a few million voxels instead of a whole 512x512x300 volume is ~10x faster.
    nonzero = bounding_ranges(codes != 0)
    if nonzero is None:
        raise InputError(f"{label_path}: label is empty (no structure labelled)")
    around = tuple(slice(a, b) for a, b in nonzero)
    try:
        inner = codes_to_classes(codes[around], lut, declared, unknown=unknown_labels, source=str(label_path))
    except ValueError as e:
        raise InputError(str(e)) from e
    found = bounding_ranges(inner > 0)
    if found is None:
        raise InputError(f"{label_path}: none of the run's structures is labelled (all codes map to background)")
    classes = np.zeros(codes.shape, dtype=np.uint8)
    classes[around] = inner
    ranges = tuple((a + s.start, b + s.start) for (a, b), s in zip(found, around))

    image, _ = load_image(image_path)
    volume = slicing_view(to_canonical(image, geometry), slice_axis)
    spacing = slicing_spacing(geometry.canonical_spacing, slice_axis)
    window = intensity_window(volume)  # over the whole volume, as inference must (it has no crop yet)
    if field_of_view == "body":
        box = body_box(volume, window, spacing)
    else:
        box = square_box(ranges, spacing, volume.shape, margin_mm)
    image_stack = network_input(volume, window, box, image_size).numpy()
    label_stack = resize_label(crop_slices(classes, box, pad_value=0), image_size)
    h, w = box.in_plane
    cached_spacing = (spacing[2], h * spacing[0] / image_size, w * spacing[1] / image_size)
    return PreprocessedVolume(image_stack, label_stack, geometry, box.as_list(), cached_spacing, window)


def write_cache(pairs: Sequence[ScanPair], out: str | Path, *, source: str, structures: Sequence[Structure],
                roles: Mapping[str, str], declared: Mapping[str, Sequence[int]] | None = None, slice_axis: int = 2,
                image_size: int = 256, margin_mm: float = DEFAULT_MARGIN_MM, unknown_labels: str = "error",
                orientations: Mapping[str, str | None] | None = None, field_of_view: str = "body",
                overwrite: bool = False, progress: bool = True) -> SliceCache:
    """Preprocess ``pairs`` into the cache at ``out`` (see the module docstring); returns the saved cache.

    ``declared``: per modality, the label codes its dataset declares (default: only the structures' codes).
    ``orientations``: per modality, the arrays' true orientation where the headers are wrong (default: the headers).
    ``field_of_view``: what a slice shows of its scan (:data:`mkdseg.labels.FIELDS_OF_VIEW`, module docstring).
    Volumes already in ``out`` made with the same parameters and source files are kept; a cache made
    with other parameters or another structure set needs ``overwrite``.
    """
    if unknown_labels not in UNKNOWN_LABEL_CHOICES:
        raise ValueError(f"unknown_labels must be one of {UNKNOWN_LABEL_CHOICES}, got {unknown_labels!r}")
    if field_of_view not in FIELDS_OF_VIEW:
        raise ValueError(f"field_of_view must be one of {FIELDS_OF_VIEW}, got {field_of_view!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    out = Path(out)
    params = {"image_size": image_size, "margin_mm": margin_mm, "unknown_labels": unknown_labels, "slice_axis": slice_axis,
              "structures": [s.to_dict() for s in structures]}
    declared_orientations = {m: o for m, o in (orientations or {}).items() if o}
    if declared_orientations:  # only then: a cache's parameters name only what was chosen
        params["orientations"] = declared_orientations
    if field_of_view != "structures":  # likewise
        params["field_of_view"] = field_of_view
    if overwrite:
        return _rebuild(pairs, out, source, structures, roles, declared, params, progress)
    cache = SliceCache(out, source=source)
    if cache.exists:
        _check_compatible(cache, source, structures, slice_axis, margin_mm, field_of_view)
    todo = [p for p in pairs if not _is_done(cache, p, params)]
    stale = [p for p in todo if cache.has(p.modality, p.subject)]
    if stale:
        first = cache.records[f"{stale[0].modality}/{stale[0].subject}"]
        raise InputError(
            f"{cache.root}: holds {len(stale)} volume(s) made with other parameters or source files, e.g. "
            f"{first.key} with {first.extra.get('preprocess')} (now {params}); pass overwrite=True / --overwrite"
        )
    return _fill(cache, todo, source, structures, roles, declared, params, progress)


def _rebuild(pairs, out: Path, source, structures, roles, declared, params, progress) -> SliceCache:
    """Build a new cache beside ``out`` and swap it in only once it is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        _fill(SliceCache(fresh, source=source), list(pairs), source, structures, roles, declared, params, progress)
        for split in out.glob("splits_*.json"):  # the folds are fixed once per dataset, and may be hand-edited
            shutil.copy2(split, fresh / split.name)
        old = out.parent / f".{out.name}.old-{fresh.name.rsplit('-', 1)[-1]}"
        if out.exists():
            out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return SliceCache(out)


def _fill(cache: SliceCache, todo: Sequence[ScanPair], source, structures, roles, declared, params, progress) -> SliceCache:
    cache.source, cache.structures, cache.roles = source, list(structures), dict(roles)
    cache.slice_axis, cache.margin_mm = params["slice_axis"], params["margin_mm"]
    cache.field_of_view = params.get("field_of_view", "structures")
    luts = {m: code_lut(structures, m) for m in {p.modality for p in todo}}
    cache.complete = False
    for pair in tqdm(todo, desc="preprocess", unit="vol", disable=not progress):
        done = preprocess_volume(pair.image, pair.label, luts[pair.modality], (declared or {}).get(pair.modality),
                                 params["slice_axis"], params["image_size"], params["margin_mm"], params["unknown_labels"],
                                 params.get("orientations", {}).get(pair.modality), cache.field_of_view)
        cache.write_volume(_record(pair, done, params), done.image, done.label)
        cache.save()  # after every volume: the manifest never lists a volume that is not complete
    cache.complete = True
    cache.save()
    return cache


def _check_compatible(cache: SliceCache, source: str, structures: Sequence[Structure], slice_axis: int, margin_mm: float,
                      field_of_view: str) -> None:
    if cache.source != source:
        raise InputError(f"{cache.root}: holds a {cache.source!r} cache, not {source!r}; choose another --out or --overwrite")
    theirs = [s.to_dict() for s in cache.structures]
    if cache.records and (theirs != [s.to_dict() for s in structures] or cache.slice_axis != slice_axis
                          or cache.margin_mm != margin_mm or cache.field_of_view != field_of_view):
        raise InputError(
            f"{cache.root}: holds structures {cache.structure_names} sliced along axis {cache.slice_axis} with "
            f"{cache.margin_mm} mm margin, field of view {cache.field_of_view!r}; this run asks for "
            f"{[s.name for s in structures]} along axis {slice_axis} with {margin_mm} mm, field of view "
            f"{field_of_view!r}; choose another --out or pass --overwrite"
        )


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
        plane=CANONICAL_PLANES[params["slice_axis"]],
        extra={
            "orientation": geometry.axcodes,  # of the file; crop_box and slice_indices: canonical RAS, slice axis last
            "declared_orientation": geometry.declared,  # the arrays' true orientation where the header is wrong
            "canonical": "RAS",
            "original_spacing": list(geometry.spacing),
            "intensity_window": list(done.window),
            "source_image": pair.image.name,
            "source_label": pair.label.name,
            # where the scan and its label lie: a test scores the whole scan in its own grid against this label
            "source_label_path": str(pair.label.resolve()),
            "source_bytes": pair.image.stat().st_size,
            "preprocess": params,
        },
    )
