"""Reading and validating nnU-Net v2 raw datasets, and matching structures across two of them by name.

Layout (nnU-Net's ``documentation/dataset_format.md``): ``DIR/dataset.json`` with ``channel_names``
(``{"0": "CT"}``), ``labels`` (``{"background": 0, "liver": 1, ...}``), ``file_ending`` (``".nii.gz"``);
images ``DIR/imagesTr/<case>_0000<file_ending>``, labels ``DIR/labelsTr/<case><file_ending>``.
Only what mkdseg can use is accepted: one channel, integer (not region-based) labels, NIfTI files. Files
are listed and paired, never opened (voxels are read by :mod:`mkdseg.data.nifti`). Ignored: hidden files
(name starting with ``.``, e.g. macOS ``._x_0000.nii.gz``), folders, files with another ending and, in
``imagesTr``, names not of the form ``<case>_<4 digits><file_ending>``. ``numTraining`` is not checked:
people add or remove cases without editing it, and the files found are what counts.

An optional key ``original_codes`` (:data:`ORIGINAL_CODES_KEY`; nnU-Net ignores it) maps label names to the codes
the dataset's source used before conversion (``mkdseg convert mmwhs``: MM-WHS's 205 ... 850 behind labels 1..7), so
that ``mkdseg segment --codes original`` can write those back.

:func:`check_dataset_integrity` checks a dataset against nnU-Net v2's own integrity rules (its
``verify_dataset_integrity``), stricter than reading: ``mkdseg convert`` runs it on what it writes.

Every problem raises :class:`~mkdseg.data.nifti.InputError` (``MissingInputError`` when a file or folder
is missing) with a message that names the file or folder and says why.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mkdseg.data.nifti import (
    AFFINE_ATOL_MM,
    NIFTI_SUFFIXES,
    InputError,
    MissingInputError,
    load_geometry,
    load_image,
    load_label,
)

#: the dataset.json key recording, per label name, the code the dataset's source used before conversion
ORIGINAL_CODES_KEY = "original_codes"


def normalise_name(name: str) -> str:
    """Matching key of a structure name: case-insensitive, runs of whitespace, ``_`` or ``-`` -> one space.

    >>> normalise_name("Right_Kidney"), normalise_name("  right -  kidney ")
    ('right kidney', 'right kidney')
    """
    return " ".join(re.sub(r"[\s_\-]+", " ", name.casefold()).split())


# channel names that spell one modality two ways: one cache name for it (the phantom's, and nnU-Net's usual "MRI")
_CHANNEL_SYNONYMS = {"mr": "mri"}


def _normalise_modality(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _natural_key(case_id: str) -> tuple[tuple[Any, ...], str]:
    # re.split with a group alternates text, number, text...: same types at the same positions, so tuples compare
    parts = tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", case_id)))
    return parts, case_id  # "1" and "01" compare equal as numbers; the text breaks the tie


@dataclass(frozen=True)
class RawCase:
    case_id: str
    image: Path  # imagesTr/<case>_0000<ending>
    label: Path  # labelsTr/<case><ending>


@dataclass(frozen=True)
class RawDataset:
    """A validated nnU-Net v2 raw dataset (see the module docstring)."""

    root: Path
    modality: str  # normalised channel name ("CT" -> "ct", "T2 SPIR" -> "t2_spir"), or the override
    labels: dict[str, int]  # foreground labels, names as in dataset.json, ordered by code; no background
    file_ending: str
    cases: tuple[RawCase, ...]  # natural order of case ids
    #: label name (as in ``labels``) -> the code the dataset's source used (:data:`ORIGINAL_CODES_KEY`); may be empty
    original_codes: dict[str, int] = field(default_factory=dict)

    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"

    @property
    def declared_codes(self) -> frozenset[int]:
        return frozenset({0, *self.labels.values()})

    def code_of(self, name: str) -> int:
        """Code of the label whose :func:`normalise_name` equals ``name``'s; InputError listing the labels if none."""
        key = normalise_name(name)
        for label, code in self.labels.items():
            if normalise_name(label) == key:
                return code
        raise InputError(f"{self.dataset_json}: no label {name!r}; it has {_listing(self)}")

    def original_code_of(self, name: str) -> int | None:
        """The code the dataset's source used for label ``name`` (matched as :meth:`code_of`), or None if not recorded."""
        key = normalise_name(name)
        return next((code for label, code in self.original_codes.items() if normalise_name(label) == key), None)


def _listing(dataset: RawDataset) -> str:
    return ", ".join(f"{name!r} ({code})" for name, code in dataset.labels.items()) or "no foreground labels"


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.load would silently keep the last of two equal keys, e.g. a label declared twice
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r} appears twice in one object")
    return dict(pairs)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingInputError(f"{path}: dataset.json not found; an nnU-Net v2 raw dataset needs one")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: cannot be read as JSON ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict):
        raise InputError(f"{path}: must hold a JSON object, not a {type(meta).__name__}")
    missing = [key for key in ("channel_names", "labels", "file_ending") if key not in meta]
    if missing:
        raise InputError(f"{path}: missing required key(s) {', '.join(missing)}")
    return meta


def _check_labels(labels: Any, path: Path) -> dict[str, int]:
    if not isinstance(labels, dict):
        raise InputError(f"{path}: 'labels' must map label names to integer codes, got {type(labels).__name__}")
    by_code: dict[int, str] = {}
    by_key: dict[str, str] = {}
    for name, code in labels.items():
        key = normalise_name(name)
        if isinstance(code, list):
            raise InputError(f"{path}: label {name!r} is {code}: region-based labels are not supported; "
                             "give each label one integer code")
        if isinstance(code, bool) or not isinstance(code, int) or code < 0:
            raise InputError(f"{path}: label {name!r} has code {code!r}; codes must be integers >= 0")
        if not key:
            raise InputError(f"{path}: label with code {code} has an empty name")
        if code in by_code:
            raise InputError(f"{path}: labels {by_code[code]!r} and {name!r} both have code {code}")
        if key in by_key:  # would make matching by name ambiguous
            raise InputError(f"{path}: labels {by_key[key]!r} and {name!r} are the same name")
        by_code[code] = by_key[key] = name
    if normalise_name(by_code.get(0, "")) != "background":
        raise InputError(f"{path}: 'labels' must contain \"background\": 0, as nnU-Net requires")
    return {by_code[code]: code for code in sorted(by_code) if code != 0}


def _check_original_codes(meta: dict[str, Any], labels: dict[str, int], path: Path) -> dict[str, int]:
    """The optional :data:`ORIGINAL_CODES_KEY`: label names of ``labels`` -> distinct codes > 0."""
    original = meta.get(ORIGINAL_CODES_KEY, {})
    if not isinstance(original, dict):
        raise InputError(f"{path}: {ORIGINAL_CODES_KEY!r} must map label names to codes, got {type(original).__name__}")
    names = {normalise_name(n) for n in labels}
    for name, code in original.items():
        if normalise_name(name) not in names:
            raise InputError(f"{path}: {ORIGINAL_CODES_KEY!r} names {name!r}, which is not one of its labels")
        if isinstance(code, bool) or not isinstance(code, int) or code <= 0:
            raise InputError(f"{path}: {ORIGINAL_CODES_KEY!r} gives {name!r} the code {code!r}; codes must be integers > 0")
    if len(set(original.values())) < len(original):
        raise InputError(f"{path}: {ORIGINAL_CODES_KEY!r} gives two labels the same code: {original}")
    return dict(original)


def _check_channels(channels: Any, path: Path) -> str:
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{path}: 'channel_names' must be an object such as {{\"0\": \"CT\"}}")
    if len(channels) > 1:
        raise InputError(f"{path}: channel_names declares {len(channels)} channels {channels}; "
                         "multi-channel input is not supported, mkdseg needs exactly one channel (CHAOS T1-DUAL: "
                         "convert one phase, mkdseg convert chaos --sequence T1DUAL --phase in)")
    name = channels.get("0")
    if not isinstance(name, str) or not _normalise_modality(name):
        raise InputError(f"{path}: channel_names must name channel \"0\", e.g. {{\"0\": \"CT\"}}; got {channels}")
    return name


def _files(folder: Path, ending: str) -> list[Path]:
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: folder not found; an nnU-Net v2 raw dataset needs it")
    return [p for p in sorted(folder.iterdir())
            if p.name.endswith(ending) and not p.name.startswith(".") and p.is_file()]


def read_label_names(dataset_json: str | os.PathLike) -> dict[str, int]:
    """The foreground labels (name -> code, ordered by code) a ``dataset.json`` declares, validated."""
    path = Path(dataset_json)
    return _check_labels(_read_json(path)["labels"], path)


def read_raw_dataset(root: str | os.PathLike, modality: str | None = None) -> RawDataset:
    """Read and validate the nnU-Net v2 raw dataset in ``root``; ``modality`` replaces ``channel_names["0"]``.

    Raises :class:`MissingInputError` for a missing folder, ``dataset.json``, ``imagesTr``, ``labelsTr``, or a
    case's image or label; :class:`InputError` for anything else unusable; ``ValueError`` for a ``modality``
    with no letter or digit.
    """
    root = Path(root)
    if not root.exists():
        raise MissingInputError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the nnU-Net raw dataset folder holding dataset.json")
    json_path = root / "dataset.json"
    meta = _read_json(json_path)
    labels = _check_labels(meta["labels"], json_path)
    original = _check_original_codes(meta, labels, json_path)
    channel = _check_channels(meta["channel_names"], json_path)
    ending = meta["file_ending"]
    if ending not in NIFTI_SUFFIXES:
        raise InputError(f"{json_path}: file_ending is {ending!r}; only NIfTI (.nii.gz or .nii) is supported")
    name = _normalise_modality(channel if modality is None else modality)
    if modality is None:  # an explicit --*-modality is kept as given
        name = _CHANNEL_SYNONYMS.get(name, name)
    if not name:
        raise ValueError(f"modality {modality!r} has no letter or digit")

    image_name = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}")
    images: dict[str, Path] = {}
    skipped: list[Path] = []
    for path in _files(root / "imagesTr", ending):
        match = image_name.fullmatch(path.name)
        if not match:
            skipped.append(path)  # not an nnU-Net image name; documented as ignored
            continue
        if match["channel"] != "0000":
            raise InputError(f"{path}: channel {match['channel']} image; multi-channel input is not supported, "
                             f"keep only <case>_0000{ending} files (and one channel in {json_path})")
        images[match["case"]] = path
    labels_found = {p.name[: -len(ending)]: p for p in _files(root / "labelsTr", ending)}

    for found, other, folder, what in ((images, labels_found, "labelsTr", "label"),
                                       (labels_found, images, "imagesTr", "image")):
        orphans = [case for case in found if case not in other]
        if orphans:
            case = orphans[0]
            expected = root / folder / (f"{case}{ending}" if what == "label" else f"{case}_0000{ending}")
            more = f" ({len(orphans) - 1} more cases like it)" if len(orphans) > 1 else ""
            raise MissingInputError(f"{found[case]}: no matching {what}; expected {expected}{more}")
    if not images:
        hint = f"; ignored {skipped[0].name}, which lacks the _0000 channel suffix" if skipped else ""
        raise InputError(f"{root / 'imagesTr'}: no cases (<case>_0000{ending} with <case>{ending} in labelsTr){hint}")
    cases = tuple(RawCase(case, images[case], labels_found[case]) for case in sorted(images, key=_natural_key))
    return RawDataset(root, name, labels, ending, cases, original)


def match_structures(target: RawDataset, assistant: RawDataset, names: Sequence[str] | None = None) -> list[str]:
    """The structures to train on, by name, as spelled in ``target``'s dataset.json.

    ``names=None``: every label of ``target`` that ``assistant`` also has (by :func:`normalise_name`), in
    ``target``'s code order; InputError naming both dataset.json files if there is none. ``names`` given:
    exactly those, in that order; InputError if one is missing from either dataset (naming that
    dataset.json and listing its labels) or two are the same name; ValueError if ``names`` is empty.
    """
    if names is None:
        theirs = {normalise_name(name) for name in assistant.labels}
        shared = [name for name in target.labels if normalise_name(name) in theirs]
        if not shared:
            raise InputError(f"{target.dataset_json} and {assistant.dataset_json} share no label name; "
                             f"target has {_listing(target)}; assistant has {_listing(assistant)}")
        return shared
    if isinstance(names, str) or not names:  # a str is a Sequence too, of one-letter names
        raise ValueError(f"names must be a non-empty list of structure names, got {names!r}")
    keys = [normalise_name(name) for name in names]
    duplicates = sorted({name for name, key in zip(names, keys) if keys.count(key) > 1})
    if duplicates:
        raise InputError(f"structures {duplicates} name the same structure twice; list each once")
    spelled = {normalise_name(name): name for name in target.labels}
    for name in names:
        target.code_of(name)
        assistant.code_of(name)  # raise naming the dataset.json that lacks it
    return [spelled[key] for key in keys]


def parse_structure_list(text: str) -> list[str]:
    """``"liver, right kidney,spleen"`` -> ``["liver", "right kidney", "spleen"]``; ValueError on an empty item."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"structure list {text!r} has an empty item; separate names with single commas")
    return items


def check_dataset_integrity(root: str | os.PathLike, read_images: bool = True) -> int:
    """Check the nnU-Net v2 raw dataset in ``root`` against nnU-Net v2's integrity rules; returns its case count.

    The rules of nnU-Net's ``verify_dataset_integrity``, without nnU-Net: ``dataset.json`` has ``labels``,
    ``channel_names``, ``numTraining`` and ``file_ending``; labels are integers, consecutive from 0, with
    ``"background": 0``; channels are named ``"0"``, ``"1"``, ...; every file in ``imagesTr`` and ``labelsTr`` ends with
    ``file_ending`` and every image is ``<case>_<4-digit channel><file_ending>``; every case has every channel and a
    label, and every label an image; ``numTraining`` is the number of cases; a case's channels and label share
    one grid (shape and affine); label values are declared labels; with ``read_images``, no image holds NaN.
    (nnU-Net itself compares shapes and spacings and only warns on origin and direction: a stricter test.)

    Args:
        root: the dataset folder, holding ``dataset.json``, ``imagesTr`` and ``labelsTr``.
        read_images: also read every image's voxels (the NaN rule); ``mkdseg convert`` checked them as it read them.

    Raises :class:`InputError` naming the file, or ``dataset.json`` and the key, of the first rule broken.
    """
    root = Path(root)
    json_path = root / "dataset.json"
    meta = _read_json(json_path)
    if "numTraining" not in meta:
        raise InputError(f"{json_path}: missing required key numTraining")
    labels = _check_labels(meta["labels"], json_path)
    codes = sorted({0, *labels.values()})
    if codes != list(range(len(codes))):
        raise InputError(f"{json_path}: label codes {codes} are not consecutive 0, 1, 2, ...; nnU-Net v2 requires it")
    _check_original_codes(meta, labels, json_path)
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or sorted(channels) != [str(i) for i in range(len(channels))] or not channels:
        raise InputError(f"{json_path}: channel_names must name channels \"0\", \"1\", ... in order; got {channels}")
    ending = meta["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(f"{json_path}: file_ending must be a file ending such as \".nii.gz\", got {ending!r}")
    image_name = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}")
    images: dict[str, dict[int, Path]] = {}
    for path in _all_files(root / "imagesTr"):
        match = image_name.fullmatch(path.name)
        if not match:
            raise InputError(f"{path}: not named <case>_<4-digit channel>{ending} (file_ending {ending!r})")
        images.setdefault(match["case"], {})[int(match["channel"])] = path
    labels_found = {}
    for path in _all_files(root / "labelsTr"):
        if not path.name.endswith(ending):
            raise InputError(f"{path}: does not end with the file_ending {ending!r} of {json_path}")
        labels_found[path.name[: -len(ending)]] = path
    expected_channels = set(range(len(channels)))
    for case in sorted(images, key=_natural_key):
        missing = sorted(expected_channels - set(images[case]))
        if missing:
            raise MissingInputError(f"{root / 'imagesTr' / f'{case}_{missing[0]:04d}{ending}'}: missing; "
                                    f"{json_path} declares {len(channels)} channel(s)")
        extra = sorted(set(images[case]) - expected_channels)
        if extra:
            raise InputError(f"{images[case][extra[0]]}: channel {extra[0]:04d}, but {json_path} declares "
                             f"{len(channels)} channel(s)")
        if case not in labels_found:
            raise MissingInputError(f"{root / 'labelsTr' / (case + ending)}: missing, the label of {images[case][0]}")
    orphans = sorted(set(labels_found) - set(images), key=_natural_key)
    if orphans:
        raise MissingInputError(f"{labels_found[orphans[0]]}: no image {orphans[0]}_0000{ending} in {root / 'imagesTr'}")
    if meta["numTraining"] != len(images):
        raise InputError(f"{json_path}: numTraining is {meta['numTraining']!r}, the dataset has {len(images)} cases")
    for case in sorted(images, key=_natural_key):
        _check_case(sorted(images[case].items()), labels_found[case], set(codes), read_images)
    return len(images)


def _all_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: folder not found; an nnU-Net v2 raw dataset needs it")
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.is_file()]


def _check_case(channels: list[tuple[int, Path]], label: Path, codes: set[int], read_images: bool) -> None:
    first = load_geometry(channels[0][1])
    for _, path in channels[1:]:
        other = load_geometry(path)
        if other.shape != first.shape or not np.allclose(other.affine, first.affine, rtol=0, atol=AFFINE_ATOL_MM):
            raise InputError(f"{path}: shape {other.shape} and grid differ from {first.path} ({first.shape})")
    if read_images:
        for _, path in channels:
            load_image(path)  # raises on NaN or infinite values, naming the file
    values = load_label(label, like=first)  # raises on another shape or grid, naming both files
    present = _values_present(values)
    if not present <= codes:
        raise InputError(f"{label}: label values {sorted(present - codes)} are not declared in dataset.json "
                         f"(labels {sorted(codes)})")


def _values_present(values: np.ndarray) -> set[int]:
    if values.dtype == np.uint8:  # counted slice by slice: np.unique would sort the whole volume
        counts = sum(np.bincount(values[..., k].ravel(), minlength=256) for k in range(values.shape[-1]))
        return set(np.flatnonzero(counts).tolist())
    return set(np.unique(values).tolist())
