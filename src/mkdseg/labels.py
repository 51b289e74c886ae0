"""Label sets: which structures a run segments, their class order and their codes in each dataset.

Nothing here knows an anatomy. A run's structures come from its data: the cache manifest written by
``mkdseg preprocess`` (matched by name across two nnU-Net datasets), or the phantom. Class 0 is background; class ``i`` is the ``i``-th structure, in the order the cache lists.

Two views of one label set:

- :class:`Structure` (data side): a name and its code in every dataset of the cache, e.g.
  ``Structure("liver", {"ct": 6, "mri": 1})``, and where a dataset recorded them, the codes its source used
  before conversion (``original``: MM-WHS's 205 ... 850 behind labels 1..7); :func:`code_lut` maps one
  dataset's codes to classes.
- :class:`DataSpec` (model side): what a checkpoint must know to segment a new scan: the structure
  names, the *target* dataset's codes (what ``mkdseg segment`` writes) and its original codes where it
  recorded them (``--codes original``), the target modality, and how scans were sliced and cropped. It
  travels as a plain dict in the model's hyper-parameters.

The one preset is MM-WHS 2017's seven cardiac structures (``MMWHS``, with the release's codes), which
``mkdseg convert mmwhs`` and the cardiac phantom use.

>>> spec = DataSpec(structures=("liver", "spleen"), codes=(6, 1))
>>> spec.num_classes, spec.classes_to_codes(np.array([0, 1, 2])).tolist()
(3, [0, 6, 1])
>>> DataSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

#: canonical RAS axis a slice is perpendicular to -> the plane's name (axis 2 = superior: transverse)
SLICE_AXIS_NAMES: tuple[str, ...] = ("sagittal", "coronal", "transverse")
DEFAULT_MARGIN_MM = 10.0  # context kept around the structures' box on every side (training crop and inference)
#: what the network's slices show of a scan: ``body`` (the body's intensity box, every slice: what a scan
#: without a label shows) or ``structures`` (the labelled structures' box and the slices around them, the
#: papers' protocol, ``--field-of-view structures``, whose models find the structures in two passes)
FIELDS_OF_VIEW: tuple[str, ...] = ("body", "structures")


@dataclass(frozen=True)
class Structure:
    """One segmented structure: its name and its label code in each dataset (keyed by modality)."""

    name: str
    codes: dict[str, int] = field(default_factory=dict)
    #: per modality, the code the dataset's source used before conversion, where the dataset recorded it
    original: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"name": self.name, "codes": dict(self.codes)}
        if self.original:  # only then: manifests and parameters of datasets without them stay as they were
            d["original"] = dict(self.original)
        return d

    @classmethod
    def from_dict(cls, value: Mapping) -> Structure:
        return cls(str(value["name"]), {str(m): int(c) for m, c in value["codes"].items()},
                   {str(m): int(c) for m, c in value.get("original", {}).items()})


def original_codes(structures: Sequence[Structure], modality: str) -> tuple[int, ...] | None:
    """The codes ``modality``'s dataset's source used for ``structures``, in class order; None unless it recorded
    one for every structure (``DataSpec(..., original_codes=original_codes(structures, target))``)."""
    codes = [s.original.get(modality) for s in structures]
    return tuple(codes) if codes and all(c is not None for c in codes) else None  # type: ignore[arg-type]


# MM-WHS 2017: (name, code) in the documented class order 1..7; the same codes in CT and MR.
MMWHS: tuple[tuple[str, int], ...] = (
    ("MYO", 205), ("LA", 420), ("LV", 500), ("RA", 550), ("RV", 600), ("AA", 820), ("PA", 850),
)


def preset_structures(preset: Sequence[tuple[str, int]], modalities: Sequence[str]) -> list[Structure]:
    """A preset's structures with the same code in every one of ``modalities``."""
    return [Structure(name, {m: code for m in modalities}) for name, code in preset]


def code_lut(structures: Sequence[Structure], modality: str) -> dict[int, int]:
    """``{code in modality's dataset: class index}`` (background 0 -> 0)."""
    lut = {0: 0}
    for cls, s in enumerate(structures, start=1):
        if modality not in s.codes:
            raise ValueError(f"structure {s.name!r} has no code for modality {modality!r} (it has {sorted(s.codes)})")
        lut[s.codes[modality]] = cls
    return lut


def codes_to_classes(label: np.ndarray, lut: Mapping[int, int], declared: Sequence[int] | None = None,
                     unknown: str = "error", source: str = "label") -> np.ndarray:
    """Map a label volume's codes to class indices with ``lut`` (see :func:`code_lut`).

    Codes in ``declared`` (the dataset's declared labels; default: those of ``lut``) but not in ``lut``
    are structures this run does not segment: background. Other codes are not labels of the dataset at
    all: ``unknown='error'`` raises ``ValueError`` naming ``source`` and the codes, ``'background'``
    maps them to 0.
    """
    if unknown not in ("error", "background"):
        raise ValueError(f"unknown must be 'error' or 'background', got {unknown!r}")
    known = set(lut) | set(declared or ())
    values = np.unique(label)
    bad = [int(v) for v in values if int(v) not in known]
    if bad and unknown == "error":
        raise ValueError(
            f"{source}: label values {bad} are not declared labels of the dataset ({sorted(known)}); "
            "pass unknown_labels='background' (--unknown-labels background) to map them to background"
        )
    out = np.zeros(label.shape, dtype=np.uint8)
    for code, cls in lut.items():
        if cls:
            out[label == code] = cls
    return out


@dataclass(frozen=True)
class DataSpec:
    """What a trained model needs to know about its data to segment a new scan (see module docstring).

    ``structures`` and ``codes`` are in class order (class ``i + 1`` is ``structures[i]``, written as
    ``codes[i]``); ``slice_axis`` is the canonical RAS axis the training slices are perpendicular to;
    ``margin_mm`` the context around the structures' box that the training crops kept; ``field_of_view``
    what the training slices showed of a scan (:data:`FIELDS_OF_VIEW`), which tells inference how to cut a new one;
    ``original_codes`` the codes the target dataset's source used before conversion, in class order, where the
    dataset recorded them (``mkdseg convert mmwhs``; ``mkdseg segment --codes original`` writes them), else None.
    """

    structures: tuple[str, ...]
    codes: tuple[int, ...]
    modality: str = "ct"
    slice_axis: int = 2
    margin_mm: float = DEFAULT_MARGIN_MM
    field_of_view: str = "structures"  # a spec that names none: the papers' protocol (the phantom's)
    original_codes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.structures:
            raise ValueError("model.data_spec: needs at least one structure")
        if len(self.codes) != len(self.structures):
            raise ValueError(f"model.data_spec: {len(self.structures)} structures but {len(self.codes)} codes")
        if len(set(self.codes)) != len(self.codes) or 0 in self.codes:
            raise ValueError(f"model.data_spec: codes must be distinct and non-zero, got {list(self.codes)}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"model.data_spec: slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise ValueError(f"model.data_spec: field_of_view must be one of {FIELDS_OF_VIEW}, got {self.field_of_view!r}")
        if self.original_codes is not None and (len(self.original_codes) != len(self.structures)
                                                or len(set(self.original_codes)) != len(self.original_codes)
                                                or 0 in self.original_codes):
            raise ValueError(f"model.data_spec: original_codes must be one distinct non-zero code per structure, "
                             f"got {list(self.original_codes)}")

    @property
    def num_classes(self) -> int:
        return len(self.structures) + 1  # + background

    def classes_to_codes(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> the target dataset's codes (0 stays 0); int16, or int32 for large codes."""
        dtype = np.int16 if max(self.codes) < 2**15 else np.int32
        lut = np.asarray((0, *self.codes), dtype=dtype)
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(f"class indices must lie in 0..{self.num_classes - 1}")
        return lut[classes]

    def codes_to_classes(self, label: np.ndarray) -> np.ndarray:
        """The target dataset's label codes -> class indices, uint8; every other code is background (a
        dataset labels more structures than a run segments: BTCV's 13 organs for a four-organ model)."""
        out = np.zeros(label.shape, dtype=np.uint8)
        for cls, code in enumerate(self.codes, start=1):
            out[label == code] = cls
        return out

    def with_original_codes(self) -> DataSpec:
        """This spec writing the original codes as its codes (``--codes original``); ValueError if none recorded."""
        if self.original_codes is None:
            raise ValueError("--codes original: the model's target dataset recorded no original codes (only datasets "
                             "written by `mkdseg convert mmwhs` do); --codes dataset writes its labels' values")
        return replace(self, codes=self.original_codes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["structures"], d["codes"] = list(self.structures), list(self.codes)
        if self.original_codes is None:  # only then: checkpoints of datasets without them stay as they were
            del d["original_codes"]
        else:
            d["original_codes"] = list(self.original_codes)
        return d

    @classmethod
    def from_dict(cls, value: Mapping | None) -> DataSpec:
        """From a model's ``data_spec`` hyper-parameter; ``None`` is the cardiac phantom's (and MM-WHS's)."""
        if value is None:
            return cls.mmwhs()
        try:
            return cls(
                structures=tuple(str(s) for s in value["structures"]), codes=tuple(int(c) for c in value["codes"]),
                modality=str(value.get("modality", "ct")), slice_axis=int(value.get("slice_axis", 2)),
                margin_mm=float(value.get("margin_mm", DEFAULT_MARGIN_MM)),
                field_of_view=str(value.get("field_of_view", "structures")),
                original_codes=None if value.get("original_codes") is None
                else tuple(int(c) for c in value["original_codes"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"model.data_spec: needs 'structures' and 'codes' lists, got {value!r}") from e

    @classmethod
    def mmwhs(cls, modality: str = "ct") -> DataSpec:
        return cls(tuple(n for n, _ in MMWHS), tuple(c for _, c in MMWHS), modality)
