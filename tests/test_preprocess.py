"""MM-WHS preprocessing into the slice cache (mkdseg.data.mmwhs), on the shared real files and on
synthetic NIfTI fixtures with awkward geometry, dtypes and errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform

import mkdseg.data.pipeline as pipeline
from mkdseg.data.cache import MANIFEST, SliceCache
from mkdseg.data.mmwhs import find_pairs, preprocess
from mkdseg.data.preprocess import preprocess_main
from mkdseg.data.nifti import InputError, MissingInputError
from mkdseg.labels import MMWHS, code_lut, codes_to_classes, preset_structures

MMWHS_LUT = code_lut(preset_structures(MMWHS, ["ct"]), "ct")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIFA = SHARED / "mmwhs_sifa"
needs_sifa = pytest.mark.skipif(not SIFA.is_dir(), reason=f"shared MM-WHS files not found at {SIFA}")


def heart_scan(shape=(40, 36, 24), spacing=(2.0, 2.0, 3.0), centre_mm=(-6.0, 10.0, 0.0), dtype=np.int16,
               extra_code: int | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A CT-like RAS scan (air -1000, body 40 HU) with a spherical 'heart': LV (500) inside MYO (205),
    LA (420) above. Optionally a voxel block with a non-MM-WHS code ``extra_code``."""
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2  # world origin at the centre
    world = np.stack(np.meshgrid(*[np.arange(n) * s + o for n, s, o in zip(shape, spacing, affine[:3, 3])],
                                 indexing="ij"), -1)
    r = np.linalg.norm(world - np.asarray(centre_mm), axis=-1)
    r_la = np.linalg.norm(world - (np.asarray(centre_mm) + [0, 0, 14.0]), axis=-1)
    codes = np.zeros(shape, np.int16)
    codes[r < 14] = 205
    codes[r < 9] = 500
    codes[(r_la < 7) & (codes == 0)] = 420
    image = np.full(shape, 40.0)
    image[np.linalg.norm(world[..., :2], axis=-1) > 0.9 * min(shape[:2]) * min(spacing[:2]) / 2] = -1000
    image[codes == 205], image[codes == 500], image[codes == 420] = 120, 350, 330
    image += np.random.default_rng(0).normal(0, 5, shape)
    if extra_code is not None:
        codes[:3, :3, :3] = extra_code
    image = image.astype(dtype) if np.dtype(dtype).kind == "f" else np.rint(image).astype(dtype)
    return nib.Nifti1Image(image, affine), nib.Nifti1Image(codes, affine)


def save_pair(folder: Path, modality: str, subject: str, image: nib.Nifti1Image, label: nib.Nifti1Image,
              suffix: str = ".nii.gz") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(image, folder / f"{modality}_train_{subject}_image{suffix}")
    nib.save(label, folder / f"{modality}_train_{subject}_label{suffix}")


def small_dataset(folder: Path, n_ct: int = 2, n_mr: int = 1) -> Path:
    for i in range(n_ct):
        save_pair(folder, "ct", str(1001 + i), *heart_scan(centre_mm=(-6.0 + i, 10.0, 0.0)))
    for i in range(n_mr):
        save_pair(folder, "mr", str(1001 + i), *heart_scan(dtype=np.float32))
    return folder


def manifest_keys(out: Path) -> list[str]:
    return [f"{v['modality']}/{v['subject']}" for v in json.loads((out / MANIFEST).read_text())["volumes"]]


# -- the shared real MM-WHS slices ----------------------------------------------------------------

@needs_sifa
def test_shared_mmwhs_files_preprocess(tmp_path: Path) -> None:
    cache = preprocess(SIFA, tmp_path / "cache", image_size=128, progress=False)
    assert [r.key for r in cache.volumes()] == ["ct/9001", "ct/9002", "mr/9001", "mr/9002"]
    for record in cache.volumes():
        image, label = cache.load(record)
        # the identity affine declares the 3 stored (coronal) slices axial: 3 slices come out
        assert image.shape == label.shape == (3, 128, 128)
        assert image.dtype == np.float32 and -1 <= image.min() < image.max() <= 1
        codes = np.asanyarray(nib.load(SIFA / f"{record.modality}_train_{record.subject}_label.nii.gz").dataobj)
        # the structures present are kept, mapped to their classes, and nothing else appears
        assert set(np.unique(label)) == set(np.unique(codes_to_classes(codes, MMWHS_LUT)))
        # resizing keeps areas in mm^2: cached pixels x cached pixel area == original voxels x 1 mm^2
        _, row_mm, col_mm = record.spacing
        assert row_mm == pytest.approx(col_mm, rel=0.01)
        assert (label > 0).sum() * row_mm * col_mm == pytest.approx((codes > 0).sum(), rel=0.05)
        assert list(record.original_shape) == [256, 256, 3] and np.allclose(record.affine, np.eye(4))
        assert record.slice_indices == [0, 1, 2] and record.extra["orientation"] == "RAS"


# -- geometry -------------------------------------------------------------------------------------

def test_anisotropic_spacing_gives_square_mm_pixels(tmp_path: Path) -> None:
    image, label = heart_scan(shape=(60, 30, 20), spacing=(0.8, 1.6, 4.0))
    save_pair(tmp_path / "src", "ct", "1", image, label)
    cache = preprocess(tmp_path / "src", tmp_path / "out", assistant=None, image_size=64, progress=False,
                       field_of_view="structures")
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
    save_pair(tmp_path / "ras", "ct", "1", image, label)
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(axcodes))
    save_pair(tmp_path / "other", "ct", "1", image.as_reoriented(ornt), label.as_reoriented(ornt))
    assert "".join(nib.aff2axcodes(nib.load(tmp_path / "other" / "ct_train_1_image.nii.gz").affine)) == axcodes
    a = preprocess(tmp_path / "ras", tmp_path / "a", assistant=None, image_size=32, progress=False)
    b = preprocess(tmp_path / "other", tmp_path / "b", assistant=None, image_size=32, progress=False)
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
    save_pair(tmp_path / "src", "ct", "1", nib.Nifti1Image(image.dataobj, oblique),
              nib.Nifti1Image(np.asarray(label.dataobj), oblique))
    cache = preprocess(tmp_path / "src", tmp_path / "out", assistant=None, image_size=32, progress=False)
    _, cached = cache.load(cache.volumes()[0])
    assert set(np.unique(cached)) == {0, 1, 2, 3}  # background, MYO, LA, LV
    assert cache.volumes()[0].spacing[1] == pytest.approx(cache.volumes()[0].spacing[2], rel=0.05)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
def test_image_and_label_dtypes(tmp_path: Path, dtype) -> None:
    image, label = heart_scan(dtype=dtype)
    label = nib.Nifti1Image(np.asarray(label.dataobj).astype(dtype), label.affine)
    save_pair(tmp_path / "src", "ct", "1", image, label, suffix=".nii")  # plain .nii is accepted too
    cache = preprocess(tmp_path / "src", tmp_path / "out", assistant=None, image_size=32, progress=False)
    cached_image, cached_label = cache.load(cache.volumes()[0])
    assert set(np.unique(cached_label)) == {0, 1, 2, 3}
    assert cached_image.min() >= -1 and cached_image.max() <= 1


def test_intensity_normalisation_ignores_units(tmp_path: Path) -> None:
    """An MR in arbitrary units (any positive scale and offset) gives the same cache."""
    image, label = heart_scan(dtype=np.float32)
    save_pair(tmp_path / "a", "mr", "1", image, label)
    save_pair(tmp_path / "b", "mr", "1", nib.Nifti1Image(np.asarray(image.dataobj) * 7.5 + 3000, image.affine), label)
    a = preprocess(tmp_path / "a", tmp_path / "ca", target="mr", assistant=None, image_size=32, progress=False)
    b = preprocess(tmp_path / "b", tmp_path / "cb", target="mr", assistant=None, image_size=32, progress=False)
    assert np.allclose(a.load(a.volumes()[0])[0], b.load(b.volumes()[0])[0], atol=1e-4)


# -- discovery, manifest and resuming ---------------------------------------------------------------

def test_twenty_subjects_are_found_and_listed(tmp_path: Path) -> None:
    image, label = heart_scan(shape=(24, 24, 12), spacing=(3.0, 3.0, 4.0), centre_mm=(0.0, 0.0, -4.0))
    for i in range(20):
        save_pair(tmp_path / "src", "ct", str(1001 + i), image, label)
    save_pair(tmp_path / "src", "mr", "1001", image, label)
    (tmp_path / "src" / "ct_test_2001_image.nii.gz").write_bytes(b"")  # not training data: ignored
    (tmp_path / "src" / "notes.txt").write_text("ignored")
    cache = preprocess(tmp_path / "src", tmp_path / "out", image_size=16, progress=False)
    assert [r.subject for r in cache.volumes("ct")] == [str(1001 + i) for i in range(20)]
    assert len(SliceCache(tmp_path / "out").volumes("mr")) == 1


def test_subjects_sort_numerically(tmp_path: Path) -> None:
    image, label = heart_scan(shape=(8, 8, 4))
    for subject in ["10", "9", "100"]:
        save_pair(tmp_path, "ct", subject, image, label)
    assert [p.subject for p in find_pairs(tmp_path, "ct")] == ["9", "10", "100"]


def test_rerun_reuses_complete_volumes(tmp_path: Path, monkeypatch) -> None:
    src = small_dataset(tmp_path / "src")
    preprocess(src, tmp_path / "out", image_size=32, progress=False)
    calls = []
    real = pipeline.preprocess_volume
    monkeypatch.setattr(pipeline, "preprocess_volume", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    preprocess(src, tmp_path / "out", image_size=32, progress=False)
    assert calls == []
    preprocess(src, tmp_path / "out", image_size=32, progress=False, overwrite=True)
    assert len(calls) == 3


def test_other_parameters_need_overwrite(tmp_path: Path) -> None:
    src = small_dataset(tmp_path / "src", n_ct=1)
    preprocess(src, tmp_path / "out", image_size=32, progress=False)
    with pytest.raises(InputError, match=r"other parameters.*image_size.*overwrite"):
        preprocess(src, tmp_path / "out", image_size=16, progress=False)
    cache = preprocess(src, tmp_path / "out", image_size=16, progress=False, overwrite=True)
    assert cache.load(cache.volumes()[0])[0].shape[1:] == (16, 16)


def test_interrupted_run_keeps_complete_volumes_and_resumes(tmp_path: Path, monkeypatch) -> None:
    src = small_dataset(tmp_path / "src", n_ct=3, n_mr=1)
    real = pipeline.preprocess_volume
    calls = []

    def dies_on_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "preprocess_volume", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        preprocess(src, tmp_path / "out", image_size=32, progress=False)
    assert manifest_keys(tmp_path / "out") == ["ct/1001", "ct/1002"]
    cache = SliceCache(tmp_path / "out")
    for record in cache.volumes():  # every listed volume is complete and readable
        image, label = cache.load(record, mmap=False)
        assert image.shape[0] == record.n_slices == label.shape[0]

    calls.clear()
    cache = preprocess(src, tmp_path / "out", image_size=32, progress=False)
    assert [p.name for p in calls] == ["ct_train_1003_image.nii.gz", "mr_train_1001_image.nii.gz"]
    assert manifest_keys(tmp_path / "out") == ["ct/1001", "ct/1002", "ct/1003", "mr/1001"]


def test_cli_reports_success_and_errors(tmp_path: Path, capsys) -> None:
    src = small_dataset(tmp_path / "src", n_ct=1)
    assert preprocess_main(["--src", str(src), "--out", str(tmp_path / "out"), "--image-size", "32", "--no-progress"]) == 0
    assert "1 ct, 1 mr volumes" in capsys.readouterr().out
    assert preprocess_main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 1
    assert "nowhere" in capsys.readouterr().err


# -- bad input ------------------------------------------------------------------------------------

def test_empty_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no ct_train_<id>_image"):
        preprocess(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(MissingInputError, match="absent"):
        preprocess(tmp_path / "absent", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_missing_label_file_is_named(tmp_path: Path) -> None:
    src = small_dataset(tmp_path / "src")
    (src / "ct_train_1002_label.nii.gz").unlink()
    with pytest.raises(InputError, match=r"ct_train_1002_image.nii.gz: no label file ct_train_1002_label"):
        preprocess(src, tmp_path / "out", progress=False)


def test_label_without_image_is_named(tmp_path: Path) -> None:
    src = small_dataset(tmp_path / "src")
    (src / "mr_train_1001_image.nii.gz").unlink()
    with pytest.raises(InputError, match=r"mr_train_1001_label.nii.gz: no image file"):
        preprocess(src, tmp_path / "out", progress=False)


def test_unknown_label_codes_are_listed_or_mapped_to_background(tmp_path: Path) -> None:
    image, label = heart_scan(extra_code=999)
    save_pair(tmp_path / "src", "ct", "1", image, label)
    with pytest.raises(InputError, match=r"ct_train_1_label.nii.gz: label values \[999\] are not declared"):
        preprocess(tmp_path / "src", tmp_path / "out", assistant=None, progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists() or manifest_keys(tmp_path / "out") == []
    cache = preprocess(tmp_path / "src", tmp_path / "out", assistant=None, image_size=32,
                       unknown_labels="background", progress=False, field_of_view="structures")
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
    save_pair(tmp_path / "src", "ct", "1", image, nib.Nifti1Image(codes, affine))
    with pytest.raises(InputError, match=rf"ct_train_1_label.nii.gz: label {problem}.*ct_train_1_image.nii.gz"):
        preprocess(tmp_path / "src", tmp_path / "out", assistant=None, progress=False)


def test_bad_volume_stops_the_run_without_listing_it(tmp_path: Path) -> None:
    src = small_dataset(tmp_path / "src", n_ct=2)
    image, label = heart_scan(dtype=np.float32)
    data = np.asarray(image.dataobj).copy()
    data[5, 5, 5] = np.nan
    save_pair(src, "ct", "1002", nib.Nifti1Image(data, image.affine), label)
    with pytest.raises(InputError, match=r"ct_train_1002_image.nii.gz.*NaN"):
        preprocess(src, tmp_path / "out", image_size=32, progress=False)
    assert manifest_keys(tmp_path / "out") == ["ct/1001"]


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 8, 2)])
def test_non_3d_image_is_refused(tmp_path: Path, shape) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), folder / "ct_train_1_image.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), folder / "ct_train_1_label.nii.gz")
    with pytest.raises(InputError, match=rf"ct_train_1_image.nii.gz: image is {len(shape)}D"):
        preprocess(folder, tmp_path / "out", assistant=None, progress=False)


def test_empty_label_is_refused(tmp_path: Path) -> None:
    image, label = heart_scan()
    save_pair(tmp_path / "src", "ct", "1", image, nib.Nifti1Image(np.zeros(label.shape, np.int16), label.affine))
    with pytest.raises(InputError, match=r"ct_train_1_label.nii.gz: label is empty"):
        preprocess(tmp_path / "src", tmp_path / "out", assistant=None, progress=False)

