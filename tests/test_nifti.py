"""NIfTI reading, validation, canonical reorientation and geometry-exact writing (mkdseg.data.nifti)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, inv_ornt_aff

from mkdseg.data import nifti
from mkdseg.data.nifti import (
    Geometry,
    InputError,
    MissingInputError,
    OutputExistsError,
    from_canonical,
    load_exact,
    load_image,
    load_label,
    save_like,
    to_canonical,
)

ALL_AXCODES = ["".join(p) for p in itertools.permutations("RAS")]
ALL_AXCODES = [
    "".join(c if keep else {"R": "L", "A": "P", "S": "I"}[c] for c, keep in zip(codes, flips))
    for codes in ALL_AXCODES
    for flips in itertools.product((True, False), repeat=3)
]


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **header) -> Path:
    image = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def oblique_affine(degrees: float = 20.0, spacing=(0.7, 0.9, 2.5), origin=(-120.3, 80.7, -33.1)) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(t / 2), -np.sin(t / 2)], [0, np.sin(t / 2), np.cos(t / 2)]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


WORLD_SPACING = {"R": 0.5, "A": 1.5, "S": 3.0}  # mm along each world axis, different so mix-ups show


def axis_aligned_affine(axcodes: str, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """Affine whose array axis i runs towards ``axcodes[i]`` with the spacing of that world axis."""
    affine = np.eye(4)
    affine[:3, 3] = origin
    for axis, code in enumerate(axcodes):
        world, sign = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}[code]
        affine[:3, axis] = 0
        affine[world, axis] = sign * WORLD_SPACING["RAS"[world]]
    return affine


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_canonical_round_trip_in_every_orientation(axcodes: str) -> None:
    shape = (3, 4, 5)
    affine = axis_aligned_affine(axcodes)
    geometry = Geometry.from_image(nib.Nifti1Image(np.zeros(shape, np.int16), affine))
    assert geometry.axcodes == axcodes
    data = np.arange(np.prod(shape)).reshape(shape)

    canonical = to_canonical(data, geometry)
    assert nib.aff2axcodes(geometry.canonical_affine) == ("R", "A", "S")
    assert canonical.shape == geometry.canonical_shape
    # the same voxel value sits at the same world position in both arrays
    for index in [(0, 0, 0), (2, 1, 4), (1, 3, 2)]:
        world = affine @ np.r_[index, 1]
        c_index = np.rint(np.linalg.solve(geometry.canonical_affine, world)[:3]).astype(int)
        assert canonical[tuple(c_index)] == data[index]
    assert geometry.canonical_spacing == (WORLD_SPACING["R"], WORLD_SPACING["A"], WORLD_SPACING["S"])
    assert np.array_equal(from_canonical(canonical, geometry), data)


def test_oblique_affine_reorients_to_closest_axes_without_resampling() -> None:
    affine = oblique_affine()
    flipped = affine @ inv_ornt_aff(axcodes2ornt("PIL"), (6, 7, 8))
    geometry = Geometry.from_image(nib.Nifti1Image(np.zeros((6, 7, 8), np.float32), flipped))
    data = np.random.default_rng(0).normal(size=(6, 7, 8))
    canonical = to_canonical(data, geometry)
    assert nib.aff2axcodes(geometry.canonical_affine) == ("R", "A", "S")
    assert np.allclose(geometry.canonical_spacing, (0.7, 0.9, 2.5))
    assert sorted(canonical.ravel()) == sorted(data.ravel())  # a permutation of the voxels, nothing resampled
    assert np.array_equal(from_canonical(canonical, geometry), data)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8, np.float32, np.float64])
def test_load_image_dtypes(tmp_path: Path, dtype) -> None:
    data = (np.arange(60).reshape(3, 4, 5) - 20 * (np.dtype(dtype).kind != "u")).astype(dtype)
    image, geometry = load_image(write(tmp_path / "x.nii.gz", data))
    assert image.dtype == np.float32 and image.shape == (3, 4, 5)
    assert np.array_equal(image, data.astype(np.float32))
    assert geometry.shape == (3, 4, 5)


def test_load_image_applies_header_scaling(tmp_path: Path) -> None:
    path = tmp_path / "scaled.nii.gz"
    write(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4), scl_slope=2.0, scl_inter=-1024.0)
    image, _ = load_image(path)
    assert image[0, 0, 1] == 2.0 * 1 - 1024.0


@pytest.mark.parametrize("stored, slope, inter, dtype", [
    (np.uint16, 1.0, -1024.0, np.int16),  # CT as often shipped: whole Hounsfield units
    (np.int16, 2.0, -1024.0, np.int16),
    (np.uint16, 1.0, -1e6, np.int32),  # whole, beyond int16
    (np.int16, 0.5, 0.0, np.float32),  # not whole: the true values, as floats
    (np.int16, 1.0, 0.0, np.int16),  # unscaled: as stored
])
def test_load_exact_keeps_scaled_integers_integer(tmp_path: Path, stored, slope, inter, dtype) -> None:
    raw = np.arange(24).reshape(2, 3, 4).astype(stored) * 3
    values, image = load_exact(write(tmp_path / "x.nii.gz", raw, scl_slope=slope, scl_inter=inter))
    assert values.dtype == dtype and np.array_equal(values, raw * slope + inter)
    nib.save(nib.Nifti1Image(values, image.affine), tmp_path / "copy.nii.gz")  # a copy holds the same values
    assert np.array_equal(np.asarray(nib.load(tmp_path / "copy.nii.gz").dataobj), raw * slope + inter)


def test_image_with_trailing_singleton_axis_is_a_volume(tmp_path: Path) -> None:
    image, geometry = load_image(write(tmp_path / "x.nii", np.ones((3, 4, 5, 1), np.float32)))
    assert image.shape == (3, 4, 5) and geometry.shape == (3, 4, 5, 1)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(MissingInputError, match="absent.nii.gz") as info:
        load_image(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.nii.gz", np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        load_image(path)


def test_truncated_uncompressed_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.nii", np.ones((20, 20, 20), np.float32))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="cut.nii"):
        load_image(path)


@pytest.mark.parametrize(
    "content",
    # mtime=0 and ids: the gzip header holds a time stamp, and xdist workers must collect identical test names.
    [b"this is not an image\n" * 30, gzip.compress(b"not a nifti header" * 40, mtime=0)],
    ids=["plain-text", "gzip-not-nifti"],
)
def test_non_nifti_file_names_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(content)
    with pytest.raises(InputError, match="fake.nii.gz"):
        load_image(path)


def test_other_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.mgz"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"scan.mgz.*NIfTI"):
        load_image(path)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 8, 2), (4, 4, 4, 3, 2)])
def test_non_3d_image_says_shape(tmp_path: Path, shape) -> None:
    path = write(tmp_path / "bad.nii.gz", np.zeros(shape, np.float32))
    with pytest.raises(InputError, match=rf"bad.nii.gz.*{len(shape)}D.*{shape[0]}, {shape[1]}"):
        load_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(tmp_path: Path, bad: float) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    with pytest.raises(InputError, match=r"nanvox.nii.gz.*1 NaN or infinite"):
        load_image(write(tmp_path / "nanvox.nii.gz", data))


def test_label_shape_and_affine_mismatch_name_both_files(tmp_path: Path) -> None:
    _, geometry = load_image(write(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.float32)))
    with pytest.raises(InputError, match=r"lab.nii.gz: label shape \(4, 5, 7\).*img.nii.gz"):
        load_label(write(tmp_path / "lab.nii.gz", np.zeros((4, 5, 7), np.int16)), like=geometry)
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[0, 3] = 0.5
    with pytest.raises(InputError, match=r"lab2.nii.gz: label affine differs.*img.nii.gz"):
        load_label(write(tmp_path / "lab2.nii.gz", np.zeros((4, 5, 6), np.int16), shifted), like=geometry)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_label_dtypes(tmp_path: Path, dtype) -> None:
    _, geometry = load_image(write(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.float32)))
    codes = np.zeros((4, 5, 6), dtype)
    codes[1, 1, 1] = 205 if dtype != np.uint8 else 200
    label = load_label(write(tmp_path / "lab.nii.gz", codes), like=geometry)
    assert label.dtype.kind in "iu" and np.array_equal(label, codes.astype(np.int64))


def test_label_with_fractional_values_is_refused(tmp_path: Path) -> None:
    _, geometry = load_image(write(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.float32)))
    codes = np.zeros((4, 5, 6), np.float32)
    codes[0, 0, 0] = 204.5
    with pytest.raises(InputError, match=r"frac.nii.gz.*non-integer"):
        load_label(write(tmp_path / "frac.nii.gz", codes), like=geometry)


@pytest.mark.parametrize("forms", [(1, 0), (0, 2), (1, 1), (0, 0)])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_save_like_keeps_the_exact_geometry(tmp_path: Path, forms, suffix) -> None:
    qform_code, sform_code = forms
    affine = oblique_affine() @ inv_ornt_aff(axcodes2ornt("LPS"), (5, 6, 7))
    source = nib.Nifti1Image(np.zeros((5, 6, 7, 1), np.int16), affine)
    source.set_qform(affine if qform_code else None, code=qform_code)
    source.set_sform(affine if sform_code else None, code=sform_code)
    source.header.set_slope_inter(0.5, -100)  # intensity scaling must not leak into the label file
    nib.save(source, tmp_path / f"in{suffix}")
    _, geometry = load_image(tmp_path / f"in{suffix}")

    labels = np.zeros((5, 6, 7), np.int16)
    labels[1, 2, 3] = 850
    out = save_like(labels, geometry, tmp_path / f"out{suffix}")
    written, original = nib.load(out), nib.load(tmp_path / f"in{suffix}")
    assert written.shape == original.shape == (5, 6, 7, 1)
    assert np.array_equal(written.affine, original.affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(original.affine)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == forms
    assert written.get_data_dtype() == np.int16
    assert np.array_equal(np.asanyarray(written.dataobj)[..., 0], labels)


def test_save_like_refuses_existing_output_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    _, geometry = load_image(write(tmp_path / "in.nii.gz", np.zeros((4, 4, 4), np.float32)))
    labels = np.ones((4, 4, 4), np.uint8)
    out = tmp_path / "out" / "seg.nii.gz"
    save_like(labels, geometry, out)
    with pytest.raises(OutputExistsError, match="seg.nii.gz"):
        save_like(labels, geometry, out)
    save_like(labels * 2, geometry, out, overwrite=True)
    assert np.asanyarray(nib.load(out).dataobj).max() == 2
    (tmp_path / "plain").write_bytes(b"")  # the output gets the permissions of any new file (umask)
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode

    def broken_save(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nifti.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_like(labels, geometry, tmp_path / "out" / "new.nii.gz")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg.nii.gz"]
