"""The per-volume pipeline and `mkdseg preprocess` (mkdseg.data.pipeline, mkdseg.data.preprocess) on nnU-Net raw
datasets: the shared real MM-WHS slices as `mkdseg convert mmwhs` makes them, and synthetic datasets with awkward
geometry, dtypes and errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform

import mkdseg.data.pipeline as pipeline
from mkdseg.cli import main
from mkdseg.data.cache import MANIFEST, SliceCache
from mkdseg.data.nifti import InputError
from mkdseg.data.preprocess import preprocess_main, preprocess_nnunet
from mkdseg.inference.writer import output_values
from mkdseg.labels import MMWHS, DataSpec, code_lut, codes_to_classes, original_codes, preset_structures

from conftest import SHARED_DATA

MMWHS_LUT = code_lut(preset_structures(MMWHS, ["ct"]), "ct")
SIFA = SHARED_DATA / "mmwhs_sifa"
needs_sifa = pytest.mark.skipif(not SIFA.is_dir(), reason=f"shared MM-WHS files not found at {SIFA}")
HEART = {"background": 0, "MYO": 1, "LA": 2, "LV": 3}  # the synthetic datasets' labels


def heart_scan(shape=(40, 36, 24), spacing=(2.0, 2.0, 3.0), centre_mm=(-6.0, 10.0, 0.0), dtype=np.int16,
               extra_code: int | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A CT-like RAS scan (air -1000, body 40 HU) with a spherical 'heart': LV (3) inside MYO (1), LA (2)
    above. Optionally a voxel block with an undeclared code ``extra_code``."""
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2  # world origin at the centre
    world = np.stack(np.meshgrid(*[np.arange(n) * s + o for n, s, o in zip(shape, spacing, affine[:3, 3])],
                                 indexing="ij"), -1)
    r = np.linalg.norm(world - np.asarray(centre_mm), axis=-1)
    r_la = np.linalg.norm(world - (np.asarray(centre_mm) + [0, 0, 14.0]), axis=-1)
    codes = np.zeros(shape, np.int16)
    codes[r < 14] = HEART["MYO"]
    codes[r < 9] = HEART["LV"]
    codes[(r_la < 7) & (codes == 0)] = HEART["LA"]
    image = np.full(shape, 40.0)
    image[np.linalg.norm(world[..., :2], axis=-1) > 0.9 * min(shape[:2]) * min(spacing[:2]) / 2] = -1000
    image[codes == 1], image[codes == 3], image[codes == 2] = 120, 350, 330
    image += np.random.default_rng(0).normal(0, 5, shape)
    if extra_code is not None:
        codes[:3, :3, :3] = extra_code
    image = image.astype(dtype) if np.dtype(dtype).kind == "f" else np.rint(image).astype(dtype)
    return nib.Nifti1Image(image, affine), nib.Nifti1Image(codes, affine)


def raw_dataset(root: Path, cases: dict, channel: str = "CT", ending: str = ".nii.gz") -> Path:
    """An nnU-Net v2 raw dataset of ``{case: (image, label)}`` with the :data:`HEART` labels."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for case, (image, label) in cases.items():
        nib.save(image, root / "imagesTr" / f"{case}_0000{ending}")
        nib.save(label, root / "labelsTr" / f"{case}{ending}")
    meta = {"channel_names": {"0": channel}, "labels": HEART, "numTraining": len(cases), "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def small_datasets(folder: Path, n_ct: int = 2, n_mr: int = 1) -> tuple[Path, Path]:
    ct = raw_dataset(folder / "ct", {f"heart_{1001 + i}": heart_scan(centre_mm=(-6.0 + i, 10.0, 0.0)) for i in range(n_ct)})
    mr = raw_dataset(folder / "mr", {f"heart_{1001 + i}": heart_scan(dtype=np.float32) for i in range(n_mr)}, "MRI")
    return ct, mr


def run(target: Path, out: Path, assistant: Path | None = None, **options):
    options = {"image_size": 32, "progress": False, **options}
    return preprocess_nnunet(target, assistant, out, **options)


def manifest_keys(out: Path) -> list[str]:
    return [f"{v['modality']}/{v['subject']}" for v in json.loads((out / MANIFEST).read_text())["volumes"]]


# -- the shared real MM-WHS slices: convert, then preprocess ----------------------------------------------

@pytest.fixture(scope="module")
def sifa_datasets(tmp_path_factory) -> tuple[Path, Path]:
    """The shared MM-WHS files as shipped (MM-WHS naming), converted: ``(CT dataset, MR dataset)``."""
    root = tmp_path_factory.mktemp("sifa")
    for modality in ("ct", "mr"):
        assert main(["convert", "mmwhs", "--src", str(SIFA), "--modality", modality, "--out", str(root / modality)]) == 0
    return root / "ct", root / "mr"


@needs_sifa
def test_shared_mmwhs_files_convert_then_preprocess(tmp_path: Path, sifa_datasets) -> None:
    ct, mr = sifa_datasets
    cache = run(ct, tmp_path / "cache", mr, image_size=128)
    assert [r.key for r in cache.volumes()] == ["ct/mmwhs_ct_9001", "ct/mmwhs_ct_9002", "mri/mmwhs_mr_9001", "mri/mmwhs_mr_9002"]
    assert cache.structure_names == [n for n, _ in MMWHS] and cache.roles == {"target": "ct", "assistant": "mri"}
    for record in cache.volumes():
        image, label = cache.load(record)
        # the identity affine declares the 3 stored (coronal) slices axial: 3 slices come out
        assert image.shape == label.shape == (3, 128, 128)
        assert image.dtype == np.float32 and -1 <= image.min() < image.max() <= 1
        prefix = "ct" if record.modality == "ct" else "mr"
        codes = np.asanyarray(nib.load(SIFA / f"{prefix}_train_{record.subject[-4:]}_label.nii.gz").dataobj)
        # the structures present are kept, mapped to their classes, and nothing else appears
        assert set(np.unique(label)) == set(np.unique(codes_to_classes(codes, MMWHS_LUT)))
        # resizing keeps areas in mm^2: cached pixels x cached pixel area == original voxels x 1 mm^2
        _, row_mm, col_mm = record.spacing
        assert row_mm == pytest.approx(col_mm, rel=0.01)
        assert (label > 0).sum() * row_mm * col_mm == pytest.approx((codes > 0).sum(), rel=0.05)
        assert list(record.original_shape) == [256, 256, 3] and np.allclose(record.affine, np.eye(4))
        assert record.slice_indices == [0, 1, 2] and record.extra["orientation"] == "RAS"


@needs_sifa
def test_the_release_codes_travel_from_dataset_json_to_what_segment_writes(tmp_path: Path, sifa_datasets) -> None:
    ct, mr = sifa_datasets
    cache = run(ct, tmp_path / "cache", mr, image_size=16)
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    assert manifest["structures"][1] == {"name": "LA", "codes": {"ct": 2, "mri": 2}, "original": {"ct": 420, "mri": 420}}
    # the spec a model records (data.data_spec) with the target's original codes, and what segment writes with it
    spec = DataSpec(tuple(cache.structure_names), tuple(s.codes["ct"] for s in cache.structures), "ct",
                    original_codes=original_codes(cache.structures, "ct"))
    assert DataSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["original_codes"] == [c for _, c in MMWHS]
    classes = np.arange(8).reshape(2, 2, 2)
    assert output_values(classes, spec, "original").ravel().tolist() == [0, 205, 420, 500, 550, 600, 820, 850]
    assert output_values(classes, spec, "dataset").ravel().tolist() == list(range(8))
    without = DataSpec(spec.structures, spec.codes)
    assert "original_codes" not in without.to_dict()  # checkpoints of other datasets stay as they were
    with pytest.raises(ValueError, match="--codes original: the model's target dataset recorded no original codes"):
        output_values(classes, without, "original")


# -- geometry -------------------------------------------------------------------------------------

def test_anisotropic_spacing_gives_square_mm_pixels(tmp_path: Path) -> None:
    ct = raw_dataset(tmp_path / "ct", {"heart_1": heart_scan(shape=(60, 30, 20), spacing=(0.8, 1.6, 4.0))})
    cache = run(ct, tmp_path / "out", image_size=64, field_of_view="structures")
    record = cache.volumes()[0]
    slice_mm, row_mm, col_mm = record.spacing
    assert slice_mm == 4.0 and row_mm == pytest.approx(col_mm, rel=0.03)
    _, cached = cache.load(record)
    # the spherical heart stays round: its extent along rows and columns is the same in pixels
    middle = cached[np.argmax((cached > 0).sum((1, 2)))] > 0
    rows, cols = np.flatnonzero(middle.any(1)), np.flatnonzero(middle.any(0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 2
    # heart (28 mm incl. LA: z from -14 to +21) plus 10 mm margin each side, in 4 mm slices
    assert 12 <= record.n_slices <= 15


@pytest.mark.parametrize("axcodes", ["LPS", "PIR", "ASL"])
def test_cache_is_the_same_whatever_the_file_orientation(tmp_path: Path, axcodes: str) -> None:
    image, label = heart_scan()
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(axcodes))
    ras = raw_dataset(tmp_path / "ras", {"heart_1": (image, label)})
    other = raw_dataset(tmp_path / "other", {"heart_1": (image.as_reoriented(ornt), label.as_reoriented(ornt))})
    assert "".join(nib.aff2axcodes(nib.load(other / "imagesTr" / "heart_1_0000.nii.gz").affine)) == axcodes
    a, b = run(ras, tmp_path / "a"), run(other, tmp_path / "b")
    (ia, la), (ib, lb) = a.load(a.volumes()[0]), b.load(b.volumes()[0])
    assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    assert b.volumes()[0].extra["orientation"] == axcodes
    assert a.volumes()[0].crop_box == b.volumes()[0].crop_box


def test_oblique_scan_is_cropped_at_its_heart(tmp_path: Path) -> None:
    image, label = heart_scan()
    t = np.deg2rad(15)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    oblique = rotation @ image.affine
    ct = raw_dataset(tmp_path / "ct", {"heart_1": (nib.Nifti1Image(image.dataobj, oblique),
                                                   nib.Nifti1Image(np.asarray(label.dataobj), oblique))})
    cache = run(ct, tmp_path / "out")
    _, cached = cache.load(cache.volumes()[0])
    assert set(np.unique(cached)) == {0, 1, 2, 3}  # background, MYO, LA, LV
    assert cache.volumes()[0].spacing[1] == pytest.approx(cache.volumes()[0].spacing[2], rel=0.05)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
def test_image_and_label_dtypes(tmp_path: Path, dtype) -> None:
    image, label = heart_scan(dtype=dtype)
    label = nib.Nifti1Image(np.asarray(label.dataobj).astype(dtype), label.affine)
    ct = raw_dataset(tmp_path / "ct", {"heart_1": (image, label)}, ending=".nii")  # plain .nii is accepted too
    cache = run(ct, tmp_path / "out")
    cached_image, cached_label = cache.load(cache.volumes()[0])
    assert set(np.unique(cached_label)) == {0, 1, 2, 3}
    assert cached_image.min() >= -1 and cached_image.max() <= 1


def test_intensity_normalisation_ignores_units(tmp_path: Path) -> None:
    """An MR in arbitrary units (any positive scale and offset) gives the same cache."""
    image, label = heart_scan(dtype=np.float32)
    scaled = nib.Nifti1Image(np.asarray(image.dataobj) * 7.5 + 3000, image.affine)
    a = run(raw_dataset(tmp_path / "a", {"heart_1": (image, label)}, "MRI"), tmp_path / "ca")
    b = run(raw_dataset(tmp_path / "b", {"heart_1": (scaled, label)}, "MRI"), tmp_path / "cb")
    assert np.allclose(a.load(a.volumes()[0])[0], b.load(b.volumes()[0])[0], atol=1e-4)


# -- manifest and resuming ----------------------------------------------------------------------------

def test_rerun_reuses_complete_volumes(tmp_path: Path, monkeypatch) -> None:
    ct, mr = small_datasets(tmp_path)
    run(ct, tmp_path / "out", mr)
    calls = []
    real = pipeline.preprocess_volume
    monkeypatch.setattr(pipeline, "preprocess_volume", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    run(ct, tmp_path / "out", mr)
    assert calls == []
    run(ct, tmp_path / "out", mr, overwrite=True)
    assert len(calls) == 3


def test_other_parameters_need_overwrite(tmp_path: Path) -> None:
    ct, mr = small_datasets(tmp_path, n_ct=1)
    run(ct, tmp_path / "out", mr)
    with pytest.raises(InputError, match=r"other parameters.*image_size.*overwrite"):
        run(ct, tmp_path / "out", mr, image_size=16)
    cache = run(ct, tmp_path / "out", mr, image_size=16, overwrite=True)
    assert cache.load(cache.volumes()[0])[0].shape[1:] == (16, 16)


def test_interrupted_run_keeps_complete_volumes_and_resumes(tmp_path: Path, monkeypatch) -> None:
    ct, mr = small_datasets(tmp_path, n_ct=3, n_mr=1)
    real = pipeline.preprocess_volume
    calls = []

    def dies_on_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "preprocess_volume", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(ct, tmp_path / "out", mr)
    assert manifest_keys(tmp_path / "out") == ["ct/heart_1001", "ct/heart_1002"]
    cache = SliceCache(tmp_path / "out")
    for record in cache.volumes():  # every listed volume is complete and readable
        image, label = cache.load(record, mmap=False)
        assert image.shape[0] == record.n_slices == label.shape[0]

    calls.clear()
    run(ct, tmp_path / "out", mr)
    assert [p.name for p in calls] == ["heart_1003_0000.nii.gz", "heart_1001_0000.nii.gz"]
    assert manifest_keys(tmp_path / "out") == ["ct/heart_1001", "ct/heart_1002", "ct/heart_1003", "mri/heart_1001"]


def test_cli_reports_success_and_errors_and_points_src_to_convert(tmp_path: Path, capsys) -> None:
    ct, mr = small_datasets(tmp_path, n_ct=1)
    assert preprocess_main(["--target", str(ct), "--assistant", str(mr), "--out", str(tmp_path / "out"),
                            "--image-size", "32", "--no-progress"]) == 0
    assert "1 ct, 1 mri volumes" in capsys.readouterr().out
    assert preprocess_main(["--target", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 1
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the MM-WHS preset is gone: MM-WHS goes through convert
        preprocess_main(["--src", str(tmp_path), "--out", str(tmp_path / "o3")])
    assert f"--src {tmp_path}: preprocess reads nnU-Net datasets; convert MM-WHS first: mkdseg convert mmwhs" in capsys.readouterr().err


# -- bad input ------------------------------------------------------------------------------------

def test_unknown_label_codes_are_listed_or_mapped_to_background(tmp_path: Path) -> None:
    ct = raw_dataset(tmp_path / "ct", {"heart_1": heart_scan(extra_code=999)})
    with pytest.raises(InputError, match=r"heart_1.nii.gz: label values \[999\] are not declared"):
        run(ct, tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST).exists() or manifest_keys(tmp_path / "out") == []
    cache = run(ct, tmp_path / "out", unknown_labels="background", field_of_view="structures")
    record = cache.volumes()[0]
    _, cached = cache.load(record)
    assert set(np.unique(cached)) == {0, 1, 2, 3}
    # the stray block in a corner did not widen the heart crop
    assert record.crop_box[0][0] > 3 and record.crop_box[1][0] > 3


@pytest.mark.parametrize("problem", ["shape", "affine"])
def test_image_label_mismatch_names_the_files(tmp_path: Path, problem: str) -> None:
    image, label = heart_scan()
    codes = np.asarray(label.dataobj)
    affine = label.affine.copy()
    if problem == "shape":
        codes = codes[:, :, :-1]
    else:
        affine[2, 3] += 3.0
    ct = raw_dataset(tmp_path / "ct", {"heart_1": (image, nib.Nifti1Image(codes, affine))})
    with pytest.raises(InputError, match=rf"heart_1.nii.gz: label {problem}.*heart_1_0000.nii.gz"):
        run(ct, tmp_path / "out")


def test_bad_volume_stops_the_run_without_listing_it(tmp_path: Path) -> None:
    image, label = heart_scan(dtype=np.float32)
    data = np.asarray(image.dataobj).copy()
    data[5, 5, 5] = np.nan
    ct = raw_dataset(tmp_path / "ct", {"heart_1001": heart_scan(), "heart_1002": (nib.Nifti1Image(data, image.affine), label)})
    with pytest.raises(InputError, match=r"heart_1002_0000.nii.gz.*NaN"):
        run(ct, tmp_path / "out")
    assert manifest_keys(tmp_path / "out") == ["ct/heart_1001"]


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 8, 2)])
def test_non_3d_image_is_refused(tmp_path: Path, shape) -> None:
    ct = raw_dataset(tmp_path / "ct", {"heart_1": (nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)),
                                                   nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)))})
    with pytest.raises(InputError, match=rf"heart_1_0000.nii.gz: image is {len(shape)}D"):
        run(ct, tmp_path / "out")


def test_empty_label_is_refused(tmp_path: Path) -> None:
    image, label = heart_scan()
    ct = raw_dataset(tmp_path / "ct", {"heart_1": (image, nib.Nifti1Image(np.zeros(label.shape, np.int16), label.affine))})
    with pytest.raises(InputError, match=r"heart_1.nii.gz: label is empty"):
        run(ct, tmp_path / "out")
