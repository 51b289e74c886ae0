"""``mkdseg convert``: the public downloads of BTCV, CHAOS and MM-WHS -> nnU-Net v2 raw datasets, as nnU-Net's
``dataset_conversion/`` scripts make them (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``), ready for ``mkdseg preprocess`` and ``mkdseg compare``.

* **BTCV** (Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", ``RawData.zip`` after registering at
  synapse.org, syn3193805): ``Training/img/img0001.nii.gz`` and ``Training/label/label0001.nii.gz``, 13 organs.
  Licence: the Synapse terms of use (research). Cite Landman et al. 2015.
* **CHAOS** (``CHAOS_Train_Sets.zip``, zenodo.org/records/3431873, CC BY-SA 4.0): MR as DICOM series,
  ``Train_Sets/MR/<id>/T2SPIR/DICOM_anon/*.dcm``, and one PNG label per slice in ``.../T2SPIR/Ground/``
  (grey values 63 liver, 126 right kidney, 189 left kidney, 252 spleen). Needs ``pydicom``
  (``pip install 'mkdseg[convert]'``). Cite Kavur et al. 2021.
* **MM-WHS 2017** (zmiclab.github.io/zxh/0/mmwhs, on request; research use): ``{ct,mr}_train_10NN_image.nii.gz`` with
  ``..._label.nii.gz``, seven cardiac structures (codes 205 ... 850). Cite Zhuang et al. 2019.

Everything is written into a temporary folder beside ``--out`` and renamed onto it at the end: a dataset appears
complete or not at all, and an existing one is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from mkdseg.data.mmwhs import find_pairs
from mkdseg.data.nifti import InputError, MissingInputError, OutputExistsError
from mkdseg.labels import MMWHS

BTCV_LABELS = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
               "inferior vena cava", "portal vein and splenic vein", "pancreas", "right adrenal gland", "left adrenal gland")
#: CHAOS's grey value ranges of its MR labels (the challenge's own documentation), in the order of the class codes
CHAOS_MR_LABELS = (("liver", 55, 70), ("right kidney", 110, 135), ("left kidney", 175, 200), ("spleen", 240, 255))
#: RAS from DICOM's LPS patient coordinates
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

Case = tuple[str, Callable[[Path], None], Callable[[Path], None]]  # name, image writer, label writer


@contextmanager
def dataset_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed onto it when the block completes, removed when it raises."""
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: exists; pass --overwrite to replace it")
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    (tmp / "imagesTr").mkdir(parents=True)
    (tmp / "labelsTr").mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(out: Path, cases: Sequence[Case], channel: str, labels: Sequence[str] | dict[str, int],
                  name: str, reference: str, overwrite: bool = False) -> Path:
    """Write ``cases`` as an nnU-Net v2 raw dataset at ``out``; ``labels``: names in code order 1.. or name -> code."""
    if not cases:
        raise InputError(f"{out}: no cases found to convert")
    codes = labels if isinstance(labels, dict) else {n: i for i, n in enumerate(labels, start=1)}
    with dataset_folder(out, overwrite) as tmp:
        for case, write_image, write_label in cases:
            write_image(tmp / "imagesTr" / f"{case}_0000.nii.gz")
            write_label(tmp / "labelsTr" / f"{case}.nii.gz")
        meta = {"channel_names": {"0": channel}, "labels": {"background": 0, **codes}, "numTraining": len(cases),
                "file_ending": ".nii.gz", "name": name, "reference": reference}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _copy_nifti(source: Path) -> Callable[[Path], None]:
    """Re-saved through nibabel (header and voxels as they are), so a truncated download fails here, named."""
    def write(destination: Path) -> None:
        try:
            image = nib.load(source)
            nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header), destination)
        except Exception as e:  # nibabel raises several types for broken files
            raise InputError(f"{source}: not a readable NIfTI file ({e})") from e
    return write


# -- BTCV ----------------------------------------------------------------------------------------------------
def btcv_cases(src: Path) -> list[Case]:
    """``img/imgNNNN.nii.gz`` with ``label/labelNNNN.nii.gz`` (the folder ``RawData/Training`` or ``Training``)."""
    images, labels = src / "img", src / "label"
    for folder in (images, labels):
        if not folder.is_dir():
            raise MissingInputError(f"{folder}: not found; --src is the BTCV folder holding img/ and label/ (RawData/Training)")
    cases = []
    for image in sorted(images.glob("img*.nii*")):
        number = re.fullmatch(r"img(\d+)\.nii(\.gz)?", image.name)
        if not number:
            continue
        label = next((p for p in (labels / f"label{number[1]}.nii.gz", labels / f"label{number[1]}.nii") if p.exists()), None)
        if label is None:
            raise InputError(f"{image}: no label{number[1]}.nii.gz in {labels}")
        cases.append((f"btcv_{number[1]}", _copy_nifti(image), _copy_nifti(label)))
    return cases


# -- MM-WHS --------------------------------------------------------------------------------------------------
def mmwhs_cases(src: Path, modality: str) -> list[Case]:
    return [(f"mmwhs_{modality}_{pair.subject}", _copy_nifti(pair.image), _copy_nifti(pair.label))
            for pair in find_pairs(src, modality)]


# -- CHAOS ---------------------------------------------------------------------------------------------------
def read_dicom_series(folder: Path):
    """The slices of one DICOM series, ordered along their normal: ``(voxels [x, y, z], RAS affine, files in
    that order)``; voxel ``(i, j, k)`` is column ``i``, row ``j`` of slice ``k``."""
    try:
        import pydicom
    except ImportError as e:
        raise InputError("reading CHAOS's DICOM needs pydicom: pip install 'mkdseg[convert]'") from e
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise MissingInputError(f"{folder}: no .dcm files")
    slices = []
    for f in files:
        try:
            slices.append(pydicom.dcmread(f))
        except Exception as e:  # pydicom raises several types for broken files
            raise InputError(f"{f}: not a readable DICOM file ({e})") from e
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    along_row, along_column = orientation[:3], orientation[3:]  # directions of increasing column, increasing row
    normal = np.cross(along_row, along_column)
    position = np.array([float(np.dot(normal, s.ImagePositionPatient)) for s in slices])
    order = np.argsort(position)
    steps = np.diff(position[order])
    if len(steps) and (steps.min() <= 0 or not np.allclose(steps, steps.mean(), rtol=0.05)):
        raise InputError(f"{folder}: slices are not evenly spaced along their normal ({np.round(steps, 2).tolist()} mm)")
    row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    first = slices[order[0]]
    lps = np.eye(4)
    lps[:3, 0] = along_row * column_spacing
    lps[:3, 1] = along_column * row_spacing
    lps[:3, 2] = normal * (float(steps.mean()) if len(steps) else float(getattr(first, "SliceThickness", 1.0)))
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=float)
    voxels = np.stack([_rescaled(slices[k]).T for k in order], axis=-1)
    return voxels, LPS_TO_RAS @ lps, [files[k] for k in order]


def _rescaled(ds) -> np.ndarray:
    pixels = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    return pixels.astype(np.int16) if np.array_equal(pixels, np.round(pixels)) and np.abs(pixels).max() < 2**15 else pixels


def chaos_label(png: Path) -> np.ndarray:
    """One CHAOS ground-truth PNG as class codes 1..4 (:data:`CHAOS_MR_LABELS`); other grey values are an error."""
    from PIL import Image

    try:
        grey = np.asarray(Image.open(png).convert("L"))
    except Exception as e:  # Pillow raises several types for broken files
        raise InputError(f"{png}: not a readable PNG ({e})") from e
    classes = np.zeros(grey.shape, np.uint8)
    for code, (_, low, high) in enumerate(CHAOS_MR_LABELS, start=1):
        classes[(grey >= low) & (grey <= high)] = code
    stray = grey[(classes == 0) & (grey > 0)]
    if stray.size:
        raise InputError(f"{png}: grey values {sorted(set(stray.tolist()))[:5]} are none of CHAOS's labels "
                         f"({', '.join(f'{n} {lo}-{hi}' for n, lo, hi in CHAOS_MR_LABELS)})")
    return classes


def chaos_cases(src: Path, sequence: str = "T2SPIR") -> list[Case]:
    """``<id>/<sequence>/DICOM_anon/*.dcm`` with ``<id>/<sequence>/Ground/*.png`` (``--src``: ``Train_Sets/MR``);
    each PNG belongs to the DICOM file of the same name."""
    patients = sorted((p for p in src.iterdir() if (p / sequence / "DICOM_anon").is_dir()), key=lambda p: (len(p.name), p.name)) \
        if src.is_dir() else []
    if not patients:
        raise MissingInputError(f"{src}: no <id>/{sequence}/DICOM_anon folders; --src is CHAOS's Train_Sets/MR")

    def case(patient: Path) -> Case:
        series = patient / sequence / "DICOM_anon"
        cached: dict = {}

        def read():
            if not cached:
                cached["series"] = read_dicom_series(series)
            return cached["series"]

        def write_image(destination: Path) -> None:
            voxels, affine, _ = read()
            nib.save(nib.Nifti1Image(voxels, affine), destination)

        def write_label(destination: Path) -> None:
            voxels, affine, files = read()
            pngs = [patient / sequence / "Ground" / f"{f.stem}.png" for f in files]
            missing = [p for p in pngs if not p.exists()]
            if missing:
                raise InputError(f"{missing[0]}: no ground-truth PNG for {series / (missing[0].stem + '.dcm')}")
            label = np.stack([chaos_label(p).T for p in pngs], axis=-1)
            if label.shape != voxels.shape:
                raise InputError(f"{pngs[0].parent}: labels {label.shape} do not match the DICOM series {voxels.shape}")
            nib.save(nib.Nifti1Image(label, affine), destination)

        return f"chaos_{patient.name}", write_image, write_label

    return [case(p) for p in patients]


# -- command line --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkdseg convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=("btcv", "chaos", "mmwhs"), help="which public download --src holds")
    parser.add_argument("--src", required=True, type=Path, help="btcv: RawData/Training; chaos: Train_Sets/MR; mmwhs: the folder of *_train_* files")
    parser.add_argument("--out", required=True, type=Path, help="the nnU-Net raw dataset folder to write")
    parser.add_argument("--modality", choices=("ct", "mr"), default="ct", help="mmwhs: which modality's scans (default ct)")
    parser.add_argument("--sequence", default="T2SPIR", help="chaos: the MR sequence folder (default T2SPIR)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def convert_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dataset == "btcv":
            out = write_dataset(args.out, btcv_cases(args.src), "CT", BTCV_LABELS, "BTCV abdominal CT",
                                "Landman et al. 2015, Multi-Atlas Labeling Beyond the Cranial Vault (Synapse syn3193805)", args.overwrite)
        elif args.dataset == "chaos":
            out = write_dataset(args.out, chaos_cases(args.src, args.sequence), "MRI", [n for n, _, _ in CHAOS_MR_LABELS],
                                f"CHAOS abdominal MR, {args.sequence}", "Kavur et al. 2021, CHAOS challenge (zenodo 3431873)", args.overwrite)
        else:
            out = write_dataset(args.out, mmwhs_cases(args.src, args.modality), "CT" if args.modality == "ct" else "MRI",
                                dict(MMWHS), f"MM-WHS 2017 {args.modality.upper()}", "Zhuang et al. 2019, MM-WHS", args.overwrite)
    except (InputError, OSError) as e:
        print(f"mkdseg convert: error: {e}", file=sys.stderr)
        return 1
    print(f"mkdseg convert: {args.dataset} -> {out} ({json.loads((out / 'dataset.json').read_text())['numTraining']} cases)")
    return 0
