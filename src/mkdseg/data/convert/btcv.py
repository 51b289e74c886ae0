"""BTCV (Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", ``RawData.zip`` after registering at synapse.org,
syn3193805; the Synapse terms of use, research; cite Landman et al. 2015).

``--src`` is ``RawData/Training``: ``img/img0001.nii.gz`` with ``label/label0001.nii.gz`` (codes 0..13: the 13 organs
of :data:`BTCV_LABELS`, in that order). Cases are ``btcv_<number>`` as the files number them (``btcv_0001``).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdseg.data.convert.pairs import codes_to_classes, nifti_case
from mkdseg.data.convert.writer import Case, DatasetInfo, Incomplete
from mkdseg.data.nifti import InputError

BTCV_LABELS = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
               "inferior vena cava", "portal vein and splenic vein", "pancreas", "right adrenal gland", "left adrenal gland")
INFO = DatasetInfo("BTCV abdominal CT", "Landman et al. 2015, Multi-Atlas Labeling Beyond the Cranial Vault "
                   "(synapse.org syn3193805)", ("CT",), BTCV_LABELS)
_NAME = re.compile(r"(?P<kind>img|label)(?P<number>\d+)\.nii(\.gz)?")
_TABLE = {code: code for code in range(len(BTCV_LABELS) + 1)}


def btcv_dataset(src: Path) -> tuple[DatasetInfo, list[Case], list[Incomplete]]:
    """The BTCV training download as cases.

    Args:
        src: ``RawData/Training``, the folder holding ``img/`` and ``label/``.
    """
    folders = {"img": src / "img", "label": src / "label"}
    if not all(f.is_dir() for f in folders.values()):
        hint = f"it holds Training/: give --src {src / 'Training'}" if (src / "Training").is_dir() else \
            "--src is BTCV's RawData/Training, holding img/ and label/"
        raise InputError(f"--src {src}: no img/ and label/ folders; {hint}")
    found: dict[str, dict[str, Path]] = {"img": {}, "label": {}}
    for kind, folder in folders.items():
        for path in sorted(folder.iterdir()):
            match = _NAME.fullmatch(path.name)
            if not match or match["kind"] != kind:
                continue
            if match["number"] in found[kind]:
                raise InputError(f"{path}: the same scan also exists as {found[kind][match['number']]}; keep one")
            found[kind][match["number"]] = path
    cases, incomplete = [], []
    for number in sorted(found["img"].keys() | found["label"].keys(), key=int):
        image, label = found["img"].get(number), found["label"].get(number)
        if label is None:
            incomplete.append(Incomplete(f"btcv_{number}", f"{image}: no label{number}.nii.gz in {folders['label']}"))
        elif image is None:
            incomplete.append(Incomplete(f"btcv_{number}", f"{label}: no image img{number}.nii.gz in {folders['img']}"))
        else:
            cases.append(nifti_case(f"btcv_{number}", image, label, _classes))
    if not cases and not incomplete:
        raise InputError(f"--src {src}: no img<number>.nii.gz in img/ nor label<number>.nii.gz in label/")
    return INFO, cases, incomplete


def _classes(codes, source: Path):
    return codes_to_classes(codes, _TABLE, source, f"BTCV's 0..{len(BTCV_LABELS)}")
