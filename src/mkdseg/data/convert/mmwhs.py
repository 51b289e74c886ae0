"""MM-WHS 2017 (zmiclab.github.io/zxh/0/mmwhs, on request from its organisers; research use; cite Zhuang et al. 2019).

``--src`` is the folder of one modality's training files, ``{ct,mr}_train_<id>_image.nii.gz`` with
``..._label.nii.gz`` (``ct_train/``, ``mr_train/``), or the folder holding those two. The label files hold the
release's codes 205 MYO, 420 LA, 500 LV, 550 RA, 600 RV, 820 AA, 850 PA; nnU-Net v2 needs consecutive labels, so
they become classes 1..7 in that order, and ``dataset.json`` records the codes under :data:`ORIGINAL_CODES_KEY`
(``mkdseg segment --codes original`` writes them back). Several MR label files of the release also hold a stray
code 421, a known defect: it is the left atrium, written as LA and noted in the log with the file.
Cases are ``mmwhs_<modality>_<id>`` (``mmwhs_ct_1001``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mkdseg.data.convert.pairs import codes_to_classes, nifti_case
from mkdseg.data.convert.writer import Case, DatasetInfo, Incomplete
from mkdseg.data.nifti import InputError
from mkdseg.data.nnunet import ORIGINAL_CODES_KEY
from mkdseg.labels import MMWHS

MODALITIES = {"ct": "CT", "mr": "MRI"}  # --modality -> channel name
#: codes of the release that are another structure's: 421 is the left atrium (420) in several MR label files
STRAY_CODES = {421: 420}
_NAME = re.compile(r"^(?P<modality>[a-z0-9]+)_train_(?P<subject>[A-Za-z0-9-]+)_(?P<kind>image|label)\.nii(\.gz)?$")


def mmwhs_dataset(src: Path, modality: str, log: Callable[[str], None]) -> tuple[DatasetInfo, list[Case], list[Incomplete]]:
    """The MM-WHS training files of one modality as cases.

    Args:
        src: the folder of ``{modality}_train_<id>_{image,label}.nii.gz`` files, or the one holding ``{modality}_train/``.
        modality: ``ct`` or ``mr`` (:data:`MODALITIES`).
        log: takes one line per label file with a stray code (:data:`STRAY_CODES`), naming the file.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    folder = src if _files(src) or not (src / f"{modality}_train").is_dir() else src / f"{modality}_train"
    files = _files(folder)
    mine = [(m, p) for m, p in files if m["modality"] == modality]
    if not mine:
        others = sorted(({m["modality"] for m, _ in files} | {p.name[:-6] for p in src.glob("*_train") if p.is_dir()})
                        - {modality})
        hint = f"it holds {', '.join(o + '_train' for o in others)} files: pass --modality {others[0]}" if others else \
            "--src is the folder of MM-WHS's ct_train_<id>_image.nii.gz / _label.nii.gz files (or the one holding ct_train/)"
        raise InputError(f"--src {src}: no {modality}_train_<id>_image.nii.gz files for --modality {modality}; {hint}")
    found: dict[str, dict[str, Path]] = {"image": {}, "label": {}}
    for match, path in mine:
        if match["subject"] in found[match["kind"]]:
            raise InputError(f"{path}: the same scan also exists as {found[match['kind']][match['subject']]}; keep one")
        found[match["kind"]][match["subject"]] = path
    cases, incomplete = [], []
    for subject in sorted(found["image"].keys() | found["label"].keys(), key=_subject_order):
        name = f"mmwhs_{modality}_{subject}"
        image, label = found["image"].get(subject), found["label"].get(subject)
        if label is None:
            incomplete.append(Incomplete(name, f"{image}: no label file {modality}_train_{subject}_label.nii.gz beside it"))
        elif image is None:
            incomplete.append(Incomplete(name, f"{label}: no image file {modality}_train_{subject}_image.nii.gz beside it"))
        else:
            cases.append(nifti_case(name, image, label, lambda codes, source: _classes(codes, source, log)))
    info = DatasetInfo(f"MM-WHS 2017 {modality.upper()}", "Zhuang et al. 2019, MM-WHS 2017 (zmiclab.github.io/zxh/0/mmwhs)",
                       (MODALITIES[modality],), tuple(n for n, _ in MMWHS),
                       {ORIGINAL_CODES_KEY: {n: code for n, code in MMWHS}})
    return info, cases, incomplete


def _files(folder: Path) -> list[tuple[re.Match, Path]]:
    return [(m, p) for p in sorted(folder.iterdir()) if (m := _NAME.match(p.name))]


def _subject_order(subject: str) -> tuple[int, int | str]:
    return (0, int(subject)) if subject.isdigit() else (1, subject)


_TABLE = {0: 0, **{code: cls for cls, (_, code) in enumerate(MMWHS, start=1)}}
_TABLE.update({stray: _TABLE[code] for stray, code in STRAY_CODES.items()})
_KNOWN = ", ".join(f"{code} {n}" for n, code in MMWHS)


def _classes(codes: np.ndarray, source: Path, log: Callable[[str], None]) -> np.ndarray:
    classes = codes_to_classes(codes, _TABLE, source, _KNOWN)
    names = dict((code, n) for n, code in MMWHS)
    for stray, code in STRAY_CODES.items():
        count = int(np.count_nonzero(codes == stray))
        if count:
            log(f"{source}: {count} voxels of code {stray} written as {names[code]} ({code}): "
                "a known defect of the MM-WHS release")
    return classes
