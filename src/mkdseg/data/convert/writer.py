"""The shared writer of ``mkdseg convert``: a converter's cases -> one nnU-Net v2 raw dataset, complete or absent.

A converter (one module per download, as nnU-Net's ``dataset_conversion/``) describes its dataset
(:class:`DatasetInfo`) and lists its cases (:class:`Case`: a name, a cheap check and a reader of channels and
label) and the incomplete ones it found (:class:`Incomplete`). :func:`write_dataset` then

1. stops at the first incomplete case, naming its file, or with ``skip_incomplete`` logs each and leaves it out;
2. runs every case's check (file headers: shapes and geometry) before it writes anything;
3. writes each case into a temporary folder beside ``out``: ``imagesTr/<case>_0000.nii.gz`` (one file per
   channel), ``labelsTr/<case>.nii.gz`` (uint8 classes 0..N on the first channel's grid), then ``dataset.json``;
4. checks the folder against nnU-Net v2's integrity rules (:func:`mkdseg.data.nnunet.check_dataset_integrity`)
   and only then renames it onto ``out`` (an existing ``out`` is replaced only with ``overwrite``).

An error, or Ctrl-C, removes the temporary folder: nothing half-written is ever left at ``out``.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mkdseg.data.nifti import AFFINE_ATOL_MM, InputError, OutputExistsError
from mkdseg.data.nnunet import check_dataset_integrity

FILE_ENDING = ".nii.gz"


def log_to_stderr(line: str) -> None:
    print(f"mkdseg convert: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Scan:
    """One channel or label as read: voxel values on a grid, the file or folder they came from (named in
    errors), and the source NIfTI header where there is one (kept: its qform/sform codes and description)."""

    values: np.ndarray
    affine: np.ndarray
    source: Path
    header: nib.Nifti1Header | None = None


@dataclass(frozen=True)
class Case:
    """One case of a download.

    Args:
        name: the nnU-Net case identifier, e.g. ``btcv_0001``.
        read: returns the channels (in channel order) and the label, already as classes 0..N.
        check: cheap checks (file headers) run for every case before anything is written; raises InputError.
    """

    name: str
    read: Callable[[], tuple[list[Scan], Scan]]
    check: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Incomplete:
    """A case with a part missing: its name and ``"<path>: what is missing"``."""

    name: str
    problem: str


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says besides the cases.

    Args:
        name: the dataset's name.
        reference: whom to cite and where the download is.
        channels: the channel names in channel order (``channel_names``), e.g. ``("CT",)``.
        labels: the structure names of classes 1..N (``labels``, with background 0).
        extra: more ``dataset.json`` keys, e.g. MM-WHS's ``original_codes``.
    """

    name: str
    reference: str
    channels: tuple[str, ...]
    labels: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self, n_cases: int) -> dict[str, Any]:
        return {"channel_names": {str(i): c for i, c in enumerate(self.channels)},
                "labels": {"background": 0, **{n: i for i, n in enumerate(self.labels, start=1)}},
                "numTraining": n_cases, "file_ending": FILE_ENDING, "name": self.name, "reference": self.reference,
                **self.extra}


def check_same_grid(scans: Sequence[Scan]) -> None:
    """InputError naming both sources if a scan's shape or affine differs from the first's."""
    first = scans[0]
    for scan in scans[1:]:
        if scan.values.shape != first.values.shape:
            raise InputError(f"{scan.source}: shape {scan.values.shape} differs from {first.source} {first.values.shape}")
        differ = np.abs(np.asarray(scan.affine) - np.asarray(first.affine)).max()
        if differ > AFFINE_ATOL_MM:
            raise InputError(f"{scan.source}: its grid (affine) differs from {first.source}'s by up to {differ:.3g} mm")


def write_dataset(out: Path, info: DatasetInfo, cases: Sequence[Case], incomplete: Sequence[Incomplete] = (), *,
                  overwrite: bool = False, skip_incomplete: bool = False,
                  log: Callable[[str], None] = log_to_stderr) -> int:
    """Write ``cases`` as an nnU-Net v2 raw dataset at ``out`` (see the module docstring); returns the case count.

    Args:
        out: the dataset folder to create (``--out``).
        info: the dataset's channels, labels and description.
        cases: the complete cases, in the order to write them.
        incomplete: the cases with a part missing: an error (the first named) unless ``skip_incomplete``.
        overwrite: replace an existing ``out``.
        skip_incomplete: leave incomplete cases out, logging each.
        log: where notes and skipped cases go (one line each).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"--out {out}: exists; pass --overwrite to replace it")
    if incomplete and not skip_incomplete:
        others = f" ({len(incomplete) - 1} more incomplete: {', '.join(i.name for i in incomplete[1:4])}" \
                 f"{', ...' if len(incomplete) > 4 else ''})" if len(incomplete) > 1 else ""
        raise InputError(f"{incomplete[0].problem}{others}; pass --skip-incomplete to convert the complete cases only")
    for skipped in incomplete:
        log(f"skipped {skipped.name}: {skipped.problem}")
    if not cases:
        raise InputError(f"no complete case to convert ({len(incomplete)} incomplete)")
    for case in cases:
        case.check()
    with _swapped_in(out) as tmp:
        for case in cases:
            channels, label = case.read()
            _write_case(tmp, case.name, channels, label, len(info.channels), len(info.labels))
        (tmp / "dataset.json").write_text(json.dumps(info.as_json(len(cases)), indent=2) + "\n")
        check_dataset_integrity(tmp, read_images=False)  # the images' voxels were checked as they were read
    return len(cases)


def _write_case(root: Path, name: str, channels: list[Scan], label: Scan, n_channels: int, n_labels: int) -> None:
    if len(channels) != n_channels:  # a converter's mistake, not the user's
        raise AssertionError(f"{name}: {len(channels)} channels read, the dataset declares {n_channels}")
    check_same_grid([*channels, label])
    written = None
    for index, channel in enumerate(channels):
        image = _image(channel.values, channel.affine if written is None else written.affine,
                       channel.header if written is None else written.header)
        nib.save(image, root / "imagesTr" / f"{name}_{index:04d}{FILE_ENDING}")
        written = written or image
    classes = np.asarray(label.values)
    if classes.dtype != np.uint8 or (classes.size and int(classes.max()) > n_labels):
        raise AssertionError(f"{label.source}: the converter gave {classes.dtype} classes up to {classes.max()}")
    # the label on the first channel's grid and header: nnU-Net compares origin, direction and spacing
    nib.save(_image(classes, written.affine, written.header), root / "labelsTr" / f"{name}{FILE_ENDING}")


def _image(values: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None) -> nib.Nifti1Image:
    if header is None:
        return nib.Nifti1Image(values, affine)
    header = header.copy()
    header.set_data_dtype(values.dtype)
    header.set_slope_inter(1, 0)  # the values are the values: no rescaling on the way out
    return nib.Nifti1Image(values, affine, header)


@contextmanager
def _swapped_in(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` (with ``imagesTr``/``labelsTr``), renamed onto ``out`` when the block
    completes and removed when it raises; a previous ``out`` is removed only once the new one is in place."""
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.partial-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    (tmp / "imagesTr").mkdir(parents=True)
    (tmp / "labelsTr").mkdir()
    try:
        yield tmp
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
