"""The on-disk slice cache shared by the phantom and by preprocessed real scans.

Layout of a cache folder ``root``::

    root/manifest.json                 {"version": 2, "source": ..., "structures": [...], "roles": {...},
                                        "slice_axis": 2, "margin_mm": 10.0, "field_of_view": "body",
                                        "volumes": [VolumeRecord, ...]}
    root/<modality>/<subject>_image.npy  float32 [S, H, W], intensities in [-1, 1]
    root/<modality>/<subject>_label.npy  uint8   [S, H, W], class indices 0..len(structures)

The manifest says what the cache holds: ``structures`` (:class:`mkdseg.labels.Structure` as dicts: class
``i`` is the ``i``-th, with its original code in every modality's dataset), ``roles`` (which modality
was preprocessed as target and which as assistant), ``slice_axis`` (canonical RAS axis the slices are
perpendicular to), ``field_of_view`` (``body``: every slice of the scan, cut to the body's intensity box;
``structures``: the slices around the labelled structures, cut to their box plus ``margin_mm``; a manifest without
the entry means the latter).

Slices are stacked along axis 0 in the order of ``slice_indices`` of the original volume. Every file
is written atomically (:mod:`mkdseg.io`), and the manifest is written last, so a cache whose manifest
lists a volume holds that volume completely.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkdseg.data.roi import CANONICAL_PLANES
from mkdseg.io import atomic_save_npy, atomic_write_text
from mkdseg.labels import DEFAULT_MARGIN_MM, Structure

UNNAMED_FIELD_OF_VIEW = "structures"  # of a manifest that names none (the phantom's): the papers' protocol

MANIFEST = "manifest.json"
CACHE_VERSION = 2
# In-plane layout of the slices of a source whose records do not state it: the phantom draws slices in the
# radiological display convention (rows to posterior, columns to patient left); preprocessed scans' records state
# theirs (canonical RAS: transverse rows to the right, columns to anterior).
_SOURCE_PLANE = {"phantom": "PL"}


@dataclass
class VolumeRecord:
    """One cached volume. Geometry fields describe how slices map back to the original scan."""

    subject: str
    modality: str
    n_slices: int
    image_file: str  # relative to the cache root
    label_file: str | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm of the cached grid: (slice, row, col)
    original_shape: tuple[int, ...] | None = None
    affine: list[list[float]] | None = None  # original affine (4x4), for writing predictions back
    crop_box: list[list[int]] | None = None  # [[start, stop], ...] per axis of the canonical volume
    slice_indices: list[int] | None = None
    # where a slice's row and column indices run, as anatomical direction letters ("RA": rows run to the
    # patient's right, columns to anterior); augmentation flips by anatomy with it
    plane: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.subject}"


@dataclass(frozen=True)
class CacheInfo:
    """What a cache holds, without its volumes: the run's structures, modalities, roles and slicing."""

    structures: tuple[Structure, ...]
    modalities: tuple[str, ...]
    roles: dict[str, str]
    slice_axis: int = 2
    margin_mm: float = DEFAULT_MARGIN_MM
    image_size: int | None = None  # the slices' side in pixels; None: not known yet (a phantom before generation)
    field_of_view: str = UNNAMED_FIELD_OF_VIEW

    @property
    def structure_names(self) -> list[str]:
        return [s.name for s in self.structures]


class SliceCache:
    """Reads and writes a slice cache folder (see module docstring)."""

    def __init__(self, root: str | os.PathLike, source: str = "unknown"):
        self.root = Path(root)
        self.source = source
        self.records: dict[str, VolumeRecord] = {}
        self.structures: list[Structure] = []
        self.roles: dict[str, str] = {}
        self.slice_axis = 2
        self.margin_mm = DEFAULT_MARGIN_MM
        self.field_of_view = UNNAMED_FIELD_OF_VIEW
        self.complete = True  # False while `mkdseg preprocess` is still adding volumes
        manifest = self.root / MANIFEST
        if manifest.exists():
            try:
                meta = json.loads(manifest.read_text())
                self.source = meta.get("source", source)
                for r in meta["volumes"]:
                    rec = VolumeRecord(**r)
                    self.records[rec.key] = rec
                self.roles = dict(meta.get("roles", {}))
                self.slice_axis = int(meta.get("slice_axis", 2))
                self.margin_mm = float(meta.get("margin_mm", DEFAULT_MARGIN_MM))
                self.field_of_view = str(meta.get("field_of_view", UNNAMED_FIELD_OF_VIEW))
                self.complete = bool(meta.get("complete", True))
                self.structures = [Structure.from_dict(d) for d in meta["structures"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{manifest}: not a valid mkdseg slice-cache manifest ({e})") from e

    @property
    def modalities(self) -> list[str]:
        return sorted({r.modality for r in self.records.values()})

    @property
    def structure_names(self) -> list[str]:
        return [s.name for s in self.structures]

    @property
    def info(self) -> CacheInfo:
        return CacheInfo(tuple(self.structures), tuple(self.modalities), dict(self.roles), self.slice_axis, self.margin_mm,
                         self.image_size, self.field_of_view)

    @property
    def image_size(self) -> int | None:
        """The side in pixels of the cache's (square) slices, read from the first volume's file header
        (``mkdseg preprocess --image-size``); ``None`` for an empty cache or non-square slices."""
        for record in self.volumes():
            shape = np.load(self.root / record.image_file, mmap_mode="r").shape
            return int(shape[1]) if len(shape) == 3 and shape[1] == shape[2] else None
        return None

    def plane(self, record: VolumeRecord) -> str:
        """The in-plane anatomical layout of ``record``'s slices (see :attr:`VolumeRecord.plane`)."""
        return record.plane or _SOURCE_PLANE.get(self.source, CANONICAL_PLANES[self.slice_axis])

    @property
    def exists(self) -> bool:
        return (self.root / MANIFEST).exists()

    def volumes(self, modality: str | None = None) -> list[VolumeRecord]:
        recs = [r for r in self.records.values() if modality is None or r.modality == modality]
        return sorted(recs, key=lambda r: (r.modality, r.subject))

    def has(self, modality: str, subject: str) -> bool:
        return f"{modality}/{subject}" in self.records

    def write_volume(self, record: VolumeRecord, image: np.ndarray, label: np.ndarray | None) -> VolumeRecord:
        """Write one volume's arrays atomically and add it to the manifest (call ``save`` after)."""
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise ValueError(f"{record.key}: cached image must be [S, H, W], got shape {image.shape}")
        if not np.isfinite(image).all():
            raise ValueError(f"{record.key}: image contains NaN or inf values")
        record.n_slices = int(image.shape[0])
        record.image_file = f"{record.modality}/{record.subject}_image.npy"
        atomic_save_npy(self.root / record.image_file, image)
        if label is not None:
            label = np.ascontiguousarray(label, dtype=np.uint8)
            if label.shape != image.shape:
                raise ValueError(f"{record.key}: label shape {label.shape} != image shape {image.shape}")
            record.label_file = f"{record.modality}/{record.subject}_label.npy"
            atomic_save_npy(self.root / record.label_file, label)
        self.records[record.key] = record
        return record

    def save(self) -> None:
        """Write the manifest atomically: only volumes listed here are trusted by readers."""
        meta = {"version": CACHE_VERSION, "source": self.source, "structures": [s.to_dict() for s in self.structures],
                "roles": self.roles, "slice_axis": self.slice_axis, "margin_mm": self.margin_mm,
                "field_of_view": self.field_of_view, "complete": self.complete,
                "volumes": [asdict(r) for r in self.volumes()]}
        atomic_write_text(self.root / MANIFEST, json.dumps(meta, indent=1))

    def load(self, record: VolumeRecord, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(image [S,H,W] float32, label [S,H,W] uint8 or None)``."""
        mode = "r" if mmap else None
        image = np.load(self.root / record.image_file, mmap_mode=mode)
        label = np.load(self.root / record.label_file, mmap_mode=mode) if record.label_file else None
        return image, label
