"""`mkdseg convert`: stand-ins in the public downloads' exact layouts, made from the shared real scans, become
nnU-Net v2 raw datasets that pass nnU-Net's integrity rules and that `preprocess` reads; every bad input stops
with one line naming the file or the option and leaves nothing at --out."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mkdseg.data.convert.writer as writer
from mkdseg.cli import main
from mkdseg.data.nnunet import check_dataset_integrity, read_raw_dataset

from conftest import SHARED_DATA

ABDOMEN = SHARED_DATA / "abdomen_chaos_btcv"
SIFA = SHARED_DATA / "mmwhs_sifa"
needs_abdomen = pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"shared abdominal datasets not found at {ABDOMEN}")
needs_sifa = pytest.mark.skipif(not SIFA.is_dir(), reason=f"shared MM-WHS files not found at {SIFA}")
# CHAOS is DICOM: its tests need pydicom (in the dev extras, so they run wherever `make test` runs)
needs_pydicom = pytest.mark.skipif(importlib.util.find_spec("pydicom") is None, reason="pydicom not installed (pip install 'mkdseg[convert]')")
MMWHS_CODES = {"MYO": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850}


def convert(*argv) -> int:
    return main(["convert", *map(str, argv)])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mkdseg convert: error: "), lines
    return lines[0]


def nothing_written(out: Path) -> bool:
    """Neither the dataset nor a temporary folder beside it."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def named_then_skipped(capsys, dataset: str, src: Path, out: Path) -> tuple[int, str, bool, int, str]:
    """Convert with an incomplete case, then again with ``--skip-incomplete``: the first run's exit status and its
    error line, whether it left nothing at ``out``, the second run's exit status and what it said on stderr."""
    status = convert(dataset, "--src", src, "--out", out)
    line = one_error_line(capsys)
    left_nothing = nothing_written(out)
    skipped_status = convert(dataset, "--src", src, "--out", out, "--skip-incomplete")
    return status, line, left_nothing, skipped_status, capsys.readouterr().err


def nifti(path: Path, data: np.ndarray, affine=np.diag([0.8, 0.8, 2.5, 1.0])) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def labelled_block(image: nib.Nifti1Image, label: nib.Nifti1Image, n_slices: int, step: int = 2):
    """A small block of a real scan: every ``step``-th voxel in-plane, the ``n_slices`` most labelled slices."""
    codes = np.asarray(label.dataobj)
    z = int(np.argmax((codes > 0).sum((0, 1))))
    z0 = max(0, min(z - n_slices // 2, codes.shape[2] - n_slices))
    block = (slice(None, None, step), slice(None, None, step), slice(z0, z0 + n_slices))
    return image.slicer[block], label.slicer[block]


def small_real_scans(dataset: str, cases: tuple[str, ...], n_slices: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Real scans of a shared nnU-Net dataset and their labels, cut to ``n_slices`` labelled slices:
    ``[(values, codes, affine)]``."""
    scans = []
    for case in cases:
        image, label = labelled_block(nib.load(ABDOMEN / dataset / "imagesTr" / f"{case}_0000.nii.gz"),
                                      nib.load(ABDOMEN / dataset / "labelsTr" / f"{case}.nii.gz"), n_slices, step=4)
        scans.append((np.asarray(image.dataobj), np.asarray(label.dataobj), image.affine))
    return scans


# -- BTCV ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def btcv_scans():
    """Two real BTCV CTs and their labels, cut small: ``[(values 0..255, codes 0..13, affine)]``."""
    return small_real_scans("ct_btcv", ("btcv_000", "btcv_001"), 6)


def write_btcv(src: Path, scans) -> Path:
    """``img/img000N.nii.gz`` stored as the CTs of the download often are: uint16 with scl_inter -1024 (whole HU)."""
    for n, (values, codes, affine) in enumerate(scans, start=1):
        (src / "img").mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(values.astype(np.uint16), affine)
        image.header.set_slope_inter(1.0, -1024.0)
        nib.save(image, src / "img" / f"img{n:04d}.nii.gz")
        nifti(src / "label" / f"label{n:04d}.nii.gz", codes.astype(np.uint8), affine)
    return src


@needs_abdomen
def test_btcv_download_converts_to_a_dataset_nnunet_accepts_with_whole_hounsfield_units(tmp_path, btcv_scans):
    src = write_btcv(tmp_path / "RawData" / "Training", btcv_scans)
    assert nib.load(src / "img" / "img0001.nii.gz").dataobj.inter == -1024  # the stand-in is scaled, as promised
    out = tmp_path / "ct_btcv"
    assert convert("btcv", "--src", src, "--out", out) == 0
    assert check_dataset_integrity(out) == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"]["spleen"] == 1 and meta["labels"]["liver"] == 6 and len(meta["labels"]) == 14
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 2
    for n, (values, codes, affine) in enumerate(btcv_scans, start=1):
        image = nib.load(out / "imagesTr" / f"btcv_{n:04d}_0000.nii.gz")
        label = nib.load(out / "labelsTr" / f"btcv_{n:04d}.nii.gz")
        assert image.get_data_dtype() == np.int16 and image.dataobj.slope == 1 and image.dataobj.inter == 0
        assert np.array_equal(np.asarray(image.dataobj), values.astype(np.int16) - 1024)  # exactly, in whole HU
        assert np.array_equal(np.asarray(label.dataobj), codes) and set(np.unique(codes)) > {0, 1}
        assert np.allclose(image.affine, affine) and np.allclose(label.affine, affine)
    assert [c.case_id for c in read_raw_dataset(out).cases] == ["btcv_0001", "btcv_0002"]  # what preprocess reads


def test_btcv_label_without_its_image_is_named_or_skipped_by_name(tmp_path, capsys):
    src = tmp_path / "Training"
    for n in ("0001", "0002"):
        nifti(src / "img" / f"img{n}.nii.gz", np.ones((4, 4, 3), np.int16))
        nifti(src / "label" / f"label{n}.nii.gz", np.ones((4, 4, 3), np.uint8))
    nifti(src / "label" / "label0003.nii.gz", np.ones((4, 4, 3), np.uint8))
    out, problem = tmp_path / "ct", f"{src / 'label' / 'label0003.nii.gz'}: no image img0003.nii.gz"
    status, line, left_nothing, skipped_status, said = named_then_skipped(capsys, "btcv", src, out)
    assert status == 1 and problem in line and "--skip-incomplete" in line and left_nothing
    assert skipped_status == 0 and f"skipped btcv_0003: {problem}" in said
    assert check_dataset_integrity(out) == 2


def test_btcv_label_of_another_shape_is_named_before_anything_is_written(tmp_path, capsys, monkeypatch):
    src = tmp_path / "Training"
    nifti(src / "img" / "img0001.nii.gz", np.ones((4, 4, 3), np.int16))
    nifti(src / "label" / "label0001.nii.gz", np.ones((4, 4, 3), np.uint8))
    nifti(src / "img" / "img0002.nii.gz", np.ones((4, 4, 3), np.int16))
    nifti(src / "label" / "label0002.nii.gz", np.ones((4, 4, 2), np.uint8))
    monkeypatch.setattr(writer, "_swapped_in", lambda out: pytest.fail("wrote before checking every case"))
    assert convert("btcv", "--src", src, "--out", tmp_path / "ct") == 1
    line = one_error_line(capsys)
    assert f"{src / 'label' / 'label0002.nii.gz'}: label shape (4, 4, 2) differs from its image {src / 'img' / 'img0002.nii.gz'}" in line
    assert nothing_written(tmp_path / "ct")


def test_an_existing_dataset_is_kept_without_overwrite(tmp_path, capsys):
    src = tmp_path / "Training"
    nifti(src / "img" / "img0001.nii.gz", np.ones((3, 3, 2), np.int16))
    nifti(src / "label" / "label0001.nii.gz", np.zeros((3, 3, 2), np.uint8))
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "mine.txt").write_text("keep")
    assert convert("btcv", "--src", src, "--out", tmp_path / "ct") == 1
    assert f"--out {tmp_path / 'ct'}: exists; pass --overwrite" in one_error_line(capsys)
    assert (tmp_path / "ct" / "mine.txt").read_text() == "keep"
    assert convert("btcv", "--src", src, "--out", tmp_path / "ct", "--overwrite") == 0
    assert not (tmp_path / "ct" / "mine.txt").exists() and (tmp_path / "ct" / "dataset.json").exists()
    assert convert("btcv", "--src", src, "--out", tmp_path, "--overwrite") == 1  # would delete the download
    assert f"--out {tmp_path}: is or holds --src {src}" in one_error_line(capsys) and (src / "img").is_dir()


def test_a_failure_in_the_middle_leaves_nothing_half_written(tmp_path, monkeypatch):
    src = tmp_path / "Training"
    for n in ("0001", "0002"):
        nifti(src / "img" / f"img{n}.nii.gz", np.ones((3, 3, 2), np.int16))
        nifti(src / "label" / f"label{n}.nii.gz", np.zeros((3, 3, 2), np.uint8))
    real, calls = writer._write_case, []

    def dies_on_second(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C with one case written
        return real(*args)

    monkeypatch.setattr(writer, "_write_case", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        convert("btcv", "--src", src, "--out", tmp_path / "ct")
    assert calls == ["btcv_0001", "btcv_0002"] and nothing_written(tmp_path / "ct")


@pytest.mark.parametrize("dataset", ["btcv", "chaos", "mmwhs"])
def test_a_missing_or_wrong_src_names_the_option(tmp_path, capsys, dataset):
    assert convert(dataset, "--src", tmp_path / "nowhere", "--out", tmp_path / "out") == 1
    assert one_error_line(capsys) == f"mkdseg convert: error: --src {tmp_path / 'nowhere'}: not found"
    (tmp_path / "empty").mkdir()
    assert convert(dataset, "--src", tmp_path / "empty", "--out", tmp_path / "out") == 1
    assert one_error_line(capsys).startswith(f"mkdseg convert: error: --src {tmp_path / 'empty'}: no ")
    assert nothing_written(tmp_path / "out")


# -- MM-WHS ----------------------------------------------------------------------------------------------------
@needs_sifa
def test_mmwhs_ct_as_shipped_gets_consecutive_labels_and_records_the_release_codes(tmp_path):
    out = tmp_path / "mmwhs_ct"
    assert convert("mmwhs", "--src", SIFA, "--modality", "ct", "--out", out) == 0
    assert check_dataset_integrity(out) == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, **{name: i for i, name in enumerate(MMWHS_CODES, start=1)}}
    assert meta["original_codes"] == MMWHS_CODES and meta["channel_names"] == {"0": "CT"}
    codes = np.asarray(nib.load(SIFA / "ct_train_9001_label.nii.gz").dataobj)
    classes = np.asarray(nib.load(out / "labelsTr" / "mmwhs_ct_9001.nii.gz").dataobj)
    for i, code in enumerate(MMWHS_CODES.values(), start=1):
        assert np.array_equal(classes == i, codes == code)
    image = nib.load(out / "imagesTr" / "mmwhs_ct_9001_0000.nii.gz")
    assert np.array_equal(np.asarray(image.dataobj), np.asarray(nib.load(SIFA / "ct_train_9001_image.nii.gz").dataobj))
    dataset = read_raw_dataset(out)
    assert dataset.original_codes == MMWHS_CODES and dataset.original_code_of("la") == 420


@needs_sifa
def test_mmwhs_mr_stray_421_is_the_left_atrium_and_the_log_names_the_file(tmp_path, capsys):
    src = tmp_path / "mr_train"
    src.mkdir()
    for f in SIFA.glob("mr_train_*"):
        shutil.copy(f, src / f.name)
    label = nib.load(src / "mr_train_9002_label.nii.gz")
    codes = np.asarray(label.dataobj).copy()
    stray = np.argwhere(codes == 420)[:40]
    codes[tuple(stray.T)] = 421  # the release's defect
    nib.save(nib.Nifti1Image(codes, label.affine, label.header), src / "mr_train_9002_label.nii.gz")
    out = tmp_path / "mmwhs_mr"
    assert convert("mmwhs", "--src", src, "--modality", "mr", "--out", out) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "421" in line]
    assert notes == [f"mkdseg convert: {src / 'mr_train_9002_label.nii.gz'}: 40 voxels of code 421 written as LA (420): "
                     "a known defect of the MM-WHS release"]
    classes = np.asarray(nib.load(out / "labelsTr" / "mmwhs_mr_9002.nii.gz").dataobj)
    assert np.array_equal(classes == 2, (codes == 420) | (codes == 421))
    assert check_dataset_integrity(out) == 2
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "MRI"}


def test_mmwhs_without_modality_mr_names_the_option_and_unknown_codes_name_the_file(tmp_path, capsys):
    src = tmp_path / "mr_train"
    for n in ("1001", "1002"):
        nifti(src / f"mr_train_{n}_image.nii.gz", np.ones((4, 4, 3), np.int16))
        nifti(src / f"mr_train_{n}_label.nii.gz", np.full((4, 4, 3), 500, np.int16))
    out = tmp_path / "mr"
    assert convert("mmwhs", "--src", src, "--out", out) == 1
    assert one_error_line(capsys) == (f"mkdseg convert: error: --src {src}: no ct_train_<id>_image.nii.gz files for "
                                      "--modality ct; it holds mr_train files: pass --modality mr")
    nifti(src / "mr_train_1002_label.nii.gz", np.full((4, 4, 3), 999, np.int16))
    assert convert("mmwhs", "--src", src, "--modality", "mr", "--out", out) == 1
    line = one_error_line(capsys)
    assert f"{src / 'mr_train_1002_label.nii.gz'}: label values [999] are none of the dataset's codes (205 MYO" in line
    assert nothing_written(out)
    (src / "mr_train_1002_label.nii.gz").unlink()
    assert convert("mmwhs", "--src", src, "--modality", "mr", "--out", out) == 1
    assert f"{src / 'mr_train_1002_image.nii.gz'}: no label file mr_train_1002_label.nii.gz" in one_error_line(capsys)
    assert convert("mmwhs", "--src", src, "--modality", "mr", "--out", out, "--skip-incomplete") == 0
    assert "skipped mmwhs_mr_1002: " in capsys.readouterr().err and check_dataset_integrity(out) == 1


# -- CHAOS: DICOM series and PNG labels -------------------------------------------------------------------------
ORIENTATION = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal-ish series: rows run foot-ward, columns anterior-posterior
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SPACING = (1.5, 1.25)  # between rows, between columns
ORIGIN = np.array([10.0, -20.0, 30.0])
STEP = 7.7


def write_series(folder: Path, volume: np.ndarray, names: list[str], orientation=ORIENTATION) -> None:
    """``volume [column, row, slice]`` as one DICOM file per slice: slice ``k`` at ``ORIGIN + k * STEP`` along the
    normal, in file ``names[k]``.dcm."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    normal = np.cross(orientation[:3], orientation[3:])
    for k, name in enumerate(names):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(folder / f"{name}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = (ORIGIN + k * STEP * normal).tolist()
        ds.PixelSpacing = list(SPACING)
        ds.set_pixel_data(np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)),
                          photometric_interpretation="MONOCHROME2", bits_stored=16)
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)


def write_ground(folder: Path, classes: np.ndarray, names: list[str]) -> None:
    """``classes [column, row, slice]`` (0..4) as CHAOS's grey PNGs (63 liver ... 252 spleen), one per slice."""
    from PIL import Image

    folder.mkdir(parents=True)
    for k, name in enumerate(names):
        Image.fromarray(np.ascontiguousarray(classes[:, :, k].T.astype(np.uint8) * 63)).save(folder / f"{name}.png")


@pytest.fixture(scope="module")
def chaos_scans():
    """Two real CHAOS T2-SPIR MRs and their labels, cut small: ``[(int16 [column, row, slice], classes 0..4)]``."""
    return [(values.astype(np.int16), codes.astype(np.uint8))
            for values, codes, _ in small_real_scans("mr_chaos", ("chaos_001", "chaos_002"), 3)]


def write_t2spir(root: Path, patient: str, volume: np.ndarray, classes: np.ndarray) -> None:
    names = [f"IMG-0002-{k + 1:05d}" for k in range(volume.shape[2])]
    write_series(root / patient / "T2SPIR" / "DICOM_anon", volume, names, AXIAL)
    write_ground(root / patient / "T2SPIR" / "Ground", classes, names)


def write_t1dual(root: Path, patient: str, in_phase: np.ndarray, out_phase: np.ndarray, classes: np.ndarray) -> None:
    """As the release: in-phase files numbered 2, 4, ..., out-phase 1, 3, ..., the PNGs named as the in-phase files."""
    n = in_phase.shape[2]
    names = {"InPhase": [f"IMG-0004-{2 * k + 2:05d}" for k in range(n)], "OutPhase": [f"IMG-0004-{2 * k + 1:05d}" for k in range(n)]}
    write_series(root / patient / "T1DUAL" / "DICOM_anon" / "InPhase", in_phase, names["InPhase"], AXIAL)
    write_series(root / patient / "T1DUAL" / "DICOM_anon" / "OutPhase", out_phase, names["OutPhase"], AXIAL)
    write_ground(root / patient / "T1DUAL" / "Ground", classes, names["InPhase"])


@needs_pydicom
@needs_abdomen
def test_chaos_t2spir_as_shipped_converts_with_zero_padded_case_names(tmp_path, chaos_scans):
    src = tmp_path / "Train_Sets" / "MR"
    for patient, (volume, classes) in zip(("1", "10"), chaos_scans):
        write_t2spir(src, patient, volume, classes)
    out = tmp_path / "mr_chaos"
    assert convert("chaos", "--src", src, "--out", out) == 0
    assert check_dataset_integrity(out) == 2
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["chaos_01.nii.gz", "chaos_10.nii.gz"]
    for case, (volume, classes) in zip(("chaos_01", "chaos_10"), chaos_scans):
        image = nib.load(out / "imagesTr" / f"{case}_0000.nii.gz")
        assert image.get_data_dtype() == np.int16 and np.array_equal(np.asarray(image.dataobj), volume)
        assert np.array_equal(np.asarray(nib.load(out / "labelsTr" / f"{case}.nii.gz").dataobj), classes)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}
    assert meta["channel_names"] == {"0": "MRI"}


@needs_pydicom
@needs_abdomen
def test_chaos_t1dual_as_shipped_gives_in_and_out_phase_channels_or_the_one_chosen(tmp_path, chaos_scans):
    src = tmp_path / "Train_Sets" / "MR"
    (in_phase, classes), (other, _) = chaos_scans
    out_phase = (other[:, :, :in_phase.shape[2]] // 2).astype(np.int16)  # another real scan as the other echo
    write_t1dual(src, "3", in_phase, out_phase, classes)
    write_t1dual(src, "22", out_phase, in_phase, classes)
    out = tmp_path / "mr_t1"
    assert convert("chaos", "--src", src, "--sequence", "T1DUAL", "--out", out) == 0
    assert check_dataset_integrity(out) == 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1 in-phase", "1": "T1 out-phase"}
    assert np.array_equal(np.asarray(nib.load(out / "imagesTr" / "chaos_03_0000.nii.gz").dataobj), in_phase)
    assert np.array_equal(np.asarray(nib.load(out / "imagesTr" / "chaos_03_0001.nii.gz").dataobj), out_phase)
    assert np.array_equal(np.asarray(nib.load(out / "labelsTr" / "chaos_22.nii.gz").dataobj), classes)
    # one phase: the one channel mkdseg preprocess reads
    assert convert("chaos", "--src", src, "--sequence", "t1dual", "--phase", "out", "--out", tmp_path / "mr_out") == 0
    assert check_dataset_integrity(tmp_path / "mr_out") == 2
    assert read_raw_dataset(tmp_path / "mr_out").modality == "t1_out_phase"
    assert np.array_equal(np.asarray(nib.load(tmp_path / "mr_out" / "imagesTr" / "chaos_03_0000.nii.gz").dataobj), out_phase)


@needs_pydicom
def test_chaos_dicom_and_png_land_in_one_grid_at_the_patient_positions(tmp_path):
    src = tmp_path / "Train_Sets" / "MR"
    marks = {(2, 4, 1): 4, (0, 1, 3): 1}  # (slice, row, column): spleen in the last slice by position, liver in the first
    volume, classes = np.zeros((5, 6, 3), np.int16), np.zeros((5, 6, 3), np.uint8)
    for (k, row, col), cls in marks.items():
        volume[col, row, k], classes[col, row, k] = 1000, cls
    names = [f"IMG-0001-{3 - k:05d}" for k in range(3)]  # file names run against the slice positions
    write_series(src / "1" / "T2SPIR" / "DICOM_anon", volume, names)
    write_ground(src / "1" / "T2SPIR" / "Ground", classes, names)
    assert convert("chaos", "--src", src, "--out", tmp_path / "mr") == 0
    image = nib.load(tmp_path / "mr" / "imagesTr" / "chaos_1_0000.nii.gz")
    label = nib.load(tmp_path / "mr" / "labelsTr" / "chaos_1.nii.gz")
    assert np.allclose(image.affine, label.affine) and image.shape == label.shape == (5, 6, 3)
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    for (k, row, col), cls in marks.items():
        # DICOM's own geometry: position (LPS) of pixel (row, col) in slice k, as RAS
        lps = ORIGIN + k * STEP * normal + col * SPACING[1] * np.array(ORIENTATION[:3]) + row * SPACING[0] * np.array(ORIENTATION[3:])
        index = np.round(np.linalg.solve(image.affine[:3, :3], lps * [-1, -1, 1] - image.affine[:3, 3])).astype(int)
        assert np.asarray(image.dataobj)[tuple(index)] == 1000 and np.asarray(label.dataobj)[tuple(index)] == cls


@needs_pydicom
def test_chaos_patient_with_ground_but_no_dicom_is_named_or_skipped_by_name(tmp_path, capsys):
    src = tmp_path / "MR"
    volume, classes = np.ones((5, 6, 2), np.int16), np.ones((5, 6, 2), np.uint8)
    write_t2spir(src, "1", volume, classes)
    write_t2spir(src, "2", volume, classes)
    shutil.rmtree(src / "2" / "T2SPIR" / "DICOM_anon")
    out, problem = tmp_path / "mr", f"{src / '2' / 'T2SPIR' / 'DICOM_anon'}: not found"
    status, line, left_nothing, skipped_status, said = named_then_skipped(capsys, "chaos", src, out)
    assert status == 1 and problem in line and "--skip-incomplete" in line and left_nothing
    assert skipped_status == 0 and f"skipped chaos_2: {problem}" in said
    assert check_dataset_integrity(out) == 1


@needs_pydicom
def test_chaos_missing_pngs_phases_and_stray_grey_values_are_named(tmp_path, capsys):
    src = tmp_path / "MR"
    volume, classes = np.ones((5, 6, 2), np.int16), np.ones((5, 6, 2), np.uint8)
    write_t2spir(src, "1", volume, classes)
    (src / "1" / "T2SPIR" / "Ground" / "IMG-0002-00002.png").unlink()
    assert convert("chaos", "--src", src, "--out", tmp_path / "mr") == 1
    assert (f"{src / '1' / 'T2SPIR' / 'Ground' / 'IMG-0002-00002.png'}: no ground-truth PNG for "
            f"{src / '1' / 'T2SPIR' / 'DICOM_anon' / 'IMG-0002-00002.dcm'}") in one_error_line(capsys)
    t1 = tmp_path / "T1"
    write_t1dual(t1, "2", volume, volume, classes)
    shutil.rmtree(t1 / "2" / "T1DUAL" / "DICOM_anon" / "OutPhase")
    assert convert("chaos", "--src", t1, "--sequence", "T1DUAL", "--out", tmp_path / "t1") == 1
    assert f"{t1 / '2' / 'T1DUAL' / 'DICOM_anon' / 'OutPhase'}: not found" in one_error_line(capsys)
    assert convert("chaos", "--src", t1, "--sequence", "T1DUAL", "--phase", "in", "--out", tmp_path / "t1") == 0
    write_t2spir(tmp_path / "MR2", "7", volume, classes)
    from PIL import Image
    Image.fromarray(np.full((6, 5), 100, np.uint8)).save(tmp_path / "MR2" / "7" / "T2SPIR" / "Ground" / "IMG-0002-00002.png")
    assert convert("chaos", "--src", tmp_path / "MR2", "--out", tmp_path / "mr") == 1
    assert "IMG-0002-00002.png: grey values [100] are none of CHAOS's labels" in one_error_line(capsys)
    assert nothing_written(tmp_path / "mr")


def test_help_says_what_each_sequence_and_phase_expects(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "T2SPIR (default): <id>/T2SPIR/DICOM_anon/*.dcm with <id>/T2SPIR/Ground/*.png" in text
    assert "T1DUAL: <id>/T1DUAL/DICOM_anon/InPhase/*.dcm and .../OutPhase/*.dcm with one <id>/T1DUAL/Ground/*.png" in text
    assert "--phase {both,in,out}" in text and "--skip-incomplete" in text
