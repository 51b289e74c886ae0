"""`mkdseg convert`: the public downloads' layouts (synthetic stand-ins) -> nnU-Net raw datasets that `preprocess` reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mkdseg.cli import main
from mkdseg.data.nnunet import read_raw_dataset

# CHAOS is DICOM: its tests need pydicom (in the dev extras, so they run wherever `make test` runs); BTCV and MM-WHS do not
needs_pydicom = pytest.mark.skipif(importlib.util.find_spec("pydicom") is None, reason="pydicom not installed (pip install 'mkdseg[convert]')")


def nifti(path: Path, data: np.ndarray, affine=np.diag([0.8, 0.8, 2.5, 1.0])) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def test_btcv_becomes_an_nnunet_dataset_with_its_13_organs(tmp_path):
    src = tmp_path / "RawData" / "Training"
    for n in ("0001", "0002"):
        nifti(src / "img" / f"img{n}.nii.gz", np.full((6, 5, 4), int(n), np.int16))
        nifti(src / "label" / f"label{n}.nii.gz", np.eye(6, 5, dtype=np.uint8)[..., None].repeat(4, 2) * 6)
    assert main(["convert", "btcv", "--src", str(src), "--out", str(tmp_path / "ct")]) == 0
    meta = json.loads((tmp_path / "ct" / "dataset.json").read_text())
    assert meta["labels"]["liver"] == 6 and meta["labels"]["spleen"] == 1 and len(meta["labels"]) == 14
    image = nib.load(tmp_path / "ct" / "imagesTr" / "btcv_0002_0000.nii.gz")
    assert np.all(np.asarray(image.dataobj) == 2) and np.allclose(image.affine, np.diag([0.8, 0.8, 2.5, 1.0]))
    dataset = read_raw_dataset(tmp_path / "ct")  # what preprocess reads
    assert dataset.modality == "ct" and [c.case_id for c in dataset.cases] == ["btcv_0001", "btcv_0002"]


def test_mmwhs_keeps_its_codes(tmp_path):
    src = tmp_path / "mr_train"
    for n in ("1001", "1002"):
        nifti(src / f"mr_train_{n}_image.nii.gz", np.ones((4, 4, 3), np.int16))
        nifti(src / f"mr_train_{n}_label.nii.gz", np.full((4, 4, 3), 500, np.int16))
    assert main(["convert", "mmwhs", "--src", str(src), "--modality", "mr", "--out", str(tmp_path / "mr")]) == 0
    meta = json.loads((tmp_path / "mr" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"} and meta["labels"]["LV"] == 500
    assert sorted(p.name for p in (tmp_path / "mr" / "labelsTr").iterdir()) == ["mmwhs_mr_1001.nii.gz", "mmwhs_mr_1002.nii.gz"]


# -- CHAOS: DICOM series and PNG labels -----------------------------------------------------------------------
ROWS, COLS = 6, 5
ORIENTATION = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal-ish series: rows run foot-ward, columns anterior-posterior
SPACING = (1.5, 1.25)  # between rows, between columns
ORIGIN = np.array([10.0, -20.0, 30.0])
STEP = 7.7


def write_chaos_patient(root: Path, patient: str, grey_at: dict[tuple[int, int, int], int]) -> None:
    """Three DICOM slices named in *reverse* order of their position, and their PNGs; ``grey_at[(slice, row, col)]``."""
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series = root / patient / "T2SPIR"
    (series / "DICOM_anon").mkdir(parents=True)
    (series / "Ground").mkdir()
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    for k in range(3):
        name = f"IMG-0001-{3 - k:05d}"  # file names run against the slice positions
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(series / "DICOM_anon" / f"{name}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.ImageOrientationPatient = ORIENTATION
        ds.ImagePositionPatient = (ORIGIN + k * STEP * normal).tolist()
        ds.PixelSpacing = list(SPACING)
        pixels = np.zeros((ROWS, COLS), np.int16)
        grey = np.zeros((ROWS, COLS), np.uint8)
        for (slice_, row, col), value in grey_at.items():
            if slice_ == k:
                pixels[row, col] = 1000
                grey[row, col] = value
        ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
        ds.save_as(series / "DICOM_anon" / f"{name}.dcm", enforce_file_format=True)
        Image.fromarray(grey).save(series / "Ground" / f"{name}.png")


@needs_pydicom
def test_chaos_dicom_and_png_land_in_one_grid_at_the_patient_positions(tmp_path):
    src = tmp_path / "Train_Sets" / "MR"
    marks = {(2, 4, 1): 252, (0, 1, 3): 63}  # spleen in the last slice by position, liver in the first
    write_chaos_patient(src, "1", marks)
    write_chaos_patient(src, "10", {(1, 0, 0): 126})
    assert main(["convert", "chaos", "--src", str(src), "--out", str(tmp_path / "mr")]) == 0
    out = tmp_path / "mr"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["chaos_10_0000.nii.gz", "chaos_1_0000.nii.gz"]
    image = nib.load(out / "imagesTr" / "chaos_1_0000.nii.gz")
    label = nib.load(out / "labelsTr" / "chaos_1.nii.gz")
    assert np.allclose(image.affine, label.affine) and image.shape == label.shape == (COLS, ROWS, 3)
    voxels, classes = np.asarray(image.dataobj), np.asarray(label.dataobj)
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    for (k, row, col), grey in marks.items():
        # DICOM's own geometry: position (LPS) of pixel (row, col) in slice k, as RAS
        lps = ORIGIN + k * STEP * normal + col * SPACING[1] * np.array(ORIENTATION[:3]) + row * SPACING[0] * np.array(ORIENTATION[3:])
        ras = lps * [-1, -1, 1]
        index = np.round(np.linalg.solve(image.affine[:3, :3], ras - image.affine[:3, 3])).astype(int)
        assert voxels[tuple(index)] == 1000 and classes[tuple(index)] == {252: 4, 63: 1}[grey]
    assert set(np.unique(classes)) == {0, 1, 4}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}


@needs_pydicom
def test_chaos_stray_grey_values_and_missing_pngs_are_named_and_nothing_is_written(tmp_path):
    src = tmp_path / "MR"
    write_chaos_patient(src, "1", {(0, 0, 0): 100})  # between CHAOS's ranges
    assert main(["convert", "chaos", "--src", str(src), "--out", str(tmp_path / "mr")]) == 1
    assert not (tmp_path / "mr").exists() and not list(tmp_path.glob(".mr.partial-*"))
    (tmp_path / "MR2").mkdir()
    write_chaos_patient(tmp_path / "MR2", "2", {})
    png = next((tmp_path / "MR2" / "2" / "T2SPIR" / "Ground").iterdir())
    png.unlink()
    assert main(["convert", "chaos", "--src", str(tmp_path / "MR2"), "--out", str(tmp_path / "mr")]) == 1


def test_an_existing_dataset_is_kept_without_overwrite(tmp_path, capsys):
    src = tmp_path / "Training"
    nifti(src / "img" / "img0001.nii.gz", np.ones((3, 3, 2), np.int16))
    nifti(src / "label" / "label0001.nii.gz", np.zeros((3, 3, 2), np.uint8))
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "mine.txt").write_text("keep")
    assert main(["convert", "btcv", "--src", str(src), "--out", str(tmp_path / "ct")]) == 1
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "ct" / "mine.txt").read_text() == "keep"
    assert main(["convert", "btcv", "--src", str(src), "--out", str(tmp_path / "ct"), "--overwrite"]) == 0
    assert not (tmp_path / "ct" / "mine.txt").exists() and (tmp_path / "ct" / "dataset.json").exists()
