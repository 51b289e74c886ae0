"""Whole-volume prediction in the input's geometry (the mkdseg.inference package, ``mkdseg segment``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt, ornt_transform

import mkdseg.methods
from mkdseg.data import nifti
from mkdseg.data.intensity import intensity_window, normalise_intensity
from mkdseg import inference
from mkdseg.data.convert import convert_main
from mkdseg.data.preprocess import preprocess_nnunet
from mkdseg.data.nifti import load_geometry, load_image, to_canonical
from mkdseg.data.roi import Box, bounding_ranges, square_box
from mkdseg.inference import SlicePredictor, locate_structures, segment_file, segment_main
from mkdseg.inference import regions
from mkdseg.labels import MMWHS, DataSpec

MMWHS_CODES = tuple(code for _, code in MMWHS)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ABDOMEN = SHARED / "abdomen_totalseg"
needs_abdomen = pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"shared abdominal scans not found at {ABDOMEN}")
LV = 3  # class index of LV, MM-WHS code 500


SPEC = DataSpec.mmwhs()  # the cardiac label set: segment writes MM-WHS codes


class ThresholdSegmentor(L.LightningModule):
    """Stand-in for a trained method: calls class ``cls`` wherever the normalised intensity exceeds
    ``threshold``. Follows the model contract of mkdseg.methods (predict_proba, num_classes, spec, hparams)."""

    def __init__(self, image_size: int = 64, cls: int = LV, threshold: float = 0.3, spec: DataSpec = SPEC):
        super().__init__()
        self.save_hyperparameters(ignore="spec")
        self.spec, self.num_classes = spec, spec.num_classes
        self.seen: list[torch.Tensor] = []

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        hit = torch.sigmoid((x[:, 0] - self.hparams.threshold) * 50)
        probs = torch.zeros(x.shape[0], self.num_classes, *x.shape[2:])
        probs[:, 0], probs[:, self.hparams.cls] = 1 - hit, hit
        return probs


def use_model(monkeypatch, tmp_path: Path, model: torch.nn.Module) -> Path:
    """Make ``--ckpt <returned path>`` restore ``model``."""
    ckpt = tmp_path / "stand_in.ckpt"
    ckpt.write_bytes(b"stand-in")
    monkeypatch.setattr(mkdseg.methods.loading, "load_method", lambda path, map_location="cpu": model, raising=False)
    return ckpt


def tiny_mkd_checkpoint(path: Path) -> Path:
    """A real MKD checkpoint (random weights, tiny networks), in Lightning's checkpoint format."""
    from mkdseg.methods import MKDModule
    from mkdseg.methods.base import METHOD_KEY

    model = MKDModule(image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4,
                      seg_channels=(4, 8), seg_strides=(2,))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": L.__version__, METHOD_KEY: "mkdseg.methods.mkd.MKDModule"}, path)
    return path


def blob_scan(axcodes: str = "RAS", oblique_degrees: float = 0.0) -> tuple[nib.Nifti1Image, np.ndarray]:
    """An MR-like scan (air ~0, body 300) with a bright off-centre ellipsoid (1000), stored with array
    axes along ``axcodes`` (and the affine rotated by ``oblique_degrees``); returns it and the blob mask
    in the file's own axes."""
    shape, spacing = (48, 40, 30), (1.0, 1.2, 2.5)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    blob = (((grid - (30.0, 18.0, 40.0)) / (8.0, 6.0, 12.0)) ** 2).sum(-1) < 1
    body = (((grid[..., :2] - (24.0, 24.0)) / (22.0, 20.0)) ** 2).sum(-1) < 1
    rng = np.random.default_rng(1)
    data = np.abs(rng.normal(0, 10, shape)) + 300 * body + 700 * blob
    affine = np.diag(list(spacing) + [1.0])
    if oblique_degrees:
        t = np.deg2rad(oblique_degrees)
        rotation = np.eye(4)
        rotation[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
        affine = rotation @ affine
    image = nib.Nifti1Image(data.astype(np.float32), affine)
    mask = nib.Nifti1Image(blob.astype(np.uint8), affine)
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(axcodes))
    return image.as_reoriented(ornt), np.asarray(mask.as_reoriented(ornt).dataobj).astype(bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def geometry_of(path: Path) -> tuple:
    image = nib.load(path)
    return image.shape, image.affine.tolist(), nib.aff2axcodes(image.affine), int(image.header["qform_code"]), \
        int(image.header["sform_code"])


# -- geometry round trip --------------------------------------------------------------------------

@pytest.mark.parametrize(("axcodes", "degrees"), [("RAS", 0), ("LPS", 0), ("PIR", 0), ("SLA", 0), ("RAS", 15), ("LIP", 20)])
def test_heart_is_found_and_written_back_in_any_orientation(tmp_path: Path, monkeypatch, axcodes, degrees) -> None:
    scan, blob = blob_scan(axcodes, degrees)
    nib.save(scan, tmp_path / "scan.nii.gz")
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor())
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"),
                         "--ckpt", str(ckpt), "--no-progress", "--device", "cpu"]) == 0
    assert geometry_of(tmp_path / "seg.nii.gz") == geometry_of(tmp_path / "scan.nii.gz")
    seg = np.asanyarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 500}
    assert dice(seg == 500, blob) > 0.9


def test_second_pass_crops_like_preprocessing(tmp_path: Path, monkeypatch) -> None:
    """The heart box found by the first pass is the box preprocessing cuts around the label."""
    scan, blob = blob_scan("LPS")
    nib.save(scan, tmp_path / "scan.nii.gz")
    boxes = []
    real = regions.predict_box
    monkeypatch.setattr(regions, "predict_box", lambda volume, window, box, *a, **k: boxes.append(box) or
                        real(volume, window, box, *a, **k))
    segment_file(tmp_path / "scan.nii.gz", tmp_path / "seg.nii.gz", SlicePredictor(ThresholdSegmentor(64), 64), SPEC)
    geometry = load_geometry(tmp_path / "scan.nii.gz")
    expected = square_box(bounding_ranges(to_canonical(blob, geometry)), geometry.canonical_spacing,
                          geometry.canonical_shape)
    found = boxes[-1]
    assert all(abs(a - b) <= 1 for a, b in zip(found.x + found.y, expected.x + expected.y))
    gap = round(inference.LOCATE_STEP_MM / geometry.canonical_spacing[2])
    assert found.z[0] <= expected.z[0] <= found.z[0] + gap and found.z[1] - gap <= expected.z[1] <= found.z[1]


def test_network_input_is_the_preprocessed_slice(tmp_path: Path) -> None:
    """Given the same heart box, inference feeds the network exactly the slices preprocessing caches:
    same normalisation, crop, padding and resampling."""
    scan, blob = blob_scan("PIR", 10)
    nib.save(scan, tmp_path / "ct_train_1_image.nii.gz")
    nib.save(nib.Nifti1Image(blob.astype(np.int16) * 500, scan.affine), tmp_path / "ct_train_1_label.nii.gz")
    assert convert_main(["mmwhs", "--src", str(tmp_path), "--out", str(tmp_path / "ct")]) == 0
    cache = preprocess_nnunet(tmp_path / "ct", None, tmp_path / "cache", slice_axis=2, image_size=64, progress=False)
    record = cache.volumes()[0]
    cached, _ = cache.load(record)

    image, geometry = load_image(tmp_path / "ct_train_1_image.nii.gz")
    volume = to_canonical(image, geometry)
    model = ThresholdSegmentor(64)
    z = np.asarray(record.slice_indices)
    inference.predict_box(volume, intensity_window(volume), Box(*map(tuple, record.crop_box)), z,
                          SlicePredictor(model, 64), np.zeros(volume.shape, np.uint8), z, batch_size=len(z))
    assert np.allclose(model.seen[0][:, 0].numpy(), cached, atol=1e-6)


def test_scan_without_heart_gives_background(tmp_path: Path) -> None:
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    model = ThresholdSegmentor(threshold=2.0)  # never fires
    segment_file(tmp_path / "scan.nii.gz", tmp_path / "seg.nii.gz", SlicePredictor(model, 32), SPEC)
    assert not np.asanyarray(nib.load(tmp_path / "seg.nii.gz").dataobj).any()


@needs_abdomen
@pytest.mark.parametrize("name", ["ct_image.nii.gz", "mr_image.nii.gz"])
def test_shared_scans_round_trip_with_real_mkd_checkpoint(tmp_path: Path, name: str) -> None:
    ckpt = tiny_mkd_checkpoint(tmp_path / "mkd.ckpt")
    assert segment_main(["-i", str(ABDOMEN / name), "-o", str(tmp_path / name), "--ckpt", str(ckpt),
                         "--no-progress", "--batch-size", "16"]) == 0
    assert geometry_of(tmp_path / name) == geometry_of(ABDOMEN / name)
    written = nib.load(tmp_path / name)
    assert written.get_data_dtype() == np.int16
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, *MMWHS_CODES}


@needs_abdomen
@pytest.mark.parametrize(("name", "threshold"), [("ct_image.nii.gz", 0.6), ("mr_image.nii.gz", 0.3)])
def test_shared_scans_voxels_land_where_they_came_from(tmp_path: Path, name: str, threshold: float) -> None:
    """Whole-slice prediction of bright voxels gives back exactly the bright voxels of the input, in the
    file's own axes (the MR is LPS, the CT RAS). The model's slice size is the scan's (square, 3 mm
    isotropic in-plane) slice size, so no resampling blurs the comparison."""
    image, geometry = load_image(ABDOMEN / name)
    size = max(image.shape[:2])
    segment_file(ABDOMEN / name, tmp_path / name, SlicePredictor(ThresholdSegmentor(size, threshold=threshold), size),
                 SPEC, codes="index", crop=False)
    expected = normalise_intensity(image, intensity_window(to_canonical(image, geometry))) > threshold
    seg = np.asanyarray(nib.load(tmp_path / name).dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) == {0, LV}
    assert dice(seg == LV, expected) > 0.99
    for axis in range(3):  # an output flipped along any axis would be caught
        assert dice(np.flip(seg, axis) == LV, expected) < 0.7


# -- the command: outputs, folders, refusals ------------------------------------------------------

def test_codes_index_and_overwrite(tmp_path: Path, monkeypatch, capsys) -> None:
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii")
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32))
    args = ["-i", str(tmp_path / "scan.nii"), "-o", str(tmp_path / "seg.nii"), "--ckpt", str(ckpt), "--no-progress"]
    assert segment_main(args + ["--codes", "index"]) == 0
    first = (tmp_path / "seg.nii").read_bytes()
    assert set(np.unique(np.asanyarray(nib.load(tmp_path / "seg.nii").dataobj))) == {0, LV}

    assert segment_main(args) == 1
    err = capsys.readouterr().err
    assert "seg.nii" in err and "--overwrite" in err
    assert (tmp_path / "seg.nii").read_bytes() == first  # untouched
    assert segment_main(args + ["--overwrite"]) == 0
    assert set(np.unique(np.asanyarray(nib.load(tmp_path / "seg.nii").dataobj))) == {0, 500}


def test_existing_output_is_refused_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    (tmp_path / "seg.nii.gz").write_bytes(b"keep me")
    model = ThresholdSegmentor(image_size=32)
    ckpt = use_model(monkeypatch, tmp_path, model)
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--ckpt", str(ckpt)]) == 1
    assert "seg.nii.gz" in capsys.readouterr().err
    assert (tmp_path / "seg.nii.gz").read_bytes() == b"keep me" and model.seen == []


def test_folder_input(tmp_path: Path, monkeypatch) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, axcodes in [("a.nii.gz", "RAS"), ("b_0000.nii.gz", "LPS")]:
        nib.save(blob_scan(axcodes)[0], scans / name)
    (scans / "a_label.nii.gz").write_bytes(b"ground truth, not a scan")
    (scans / "readme.txt").write_text("not a scan")
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32))
    assert segment_main(["-i", str(scans), "-o", str(tmp_path / "segs"), "--ckpt", str(ckpt), "--no-progress"]) == 0
    # named as nnU-Net names its predictions: the case, without the _0000 channel suffix
    assert sorted(p.name for p in (tmp_path / "segs").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert geometry_of(tmp_path / "segs" / "b.nii.gz") == geometry_of(scans / "b_0000.nii.gz")


def test_folder_input_refuses_two_scans_of_one_case(tmp_path: Path, monkeypatch, capsys) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("b.nii.gz", "b_0000.nii.gz"):
        nib.save(blob_scan()[0], scans / name)
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32))
    assert segment_main(["-i", str(scans), "-o", str(tmp_path / "segs"), "--ckpt", str(ckpt), "--no-progress"]) == 1
    assert "b_0000.nii.gz" in capsys.readouterr().err and not (tmp_path / "segs").exists()


def test_failure_leaves_no_partial_output(tmp_path: Path, monkeypatch) -> None:
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")

    class FailsMidway(ThresholdSegmentor):
        def predict_proba(self, x):
            if len(self.seen) == 2:
                raise RuntimeError("out of memory")
            return super().predict_proba(x)

    with pytest.raises(RuntimeError, match="out of memory"):
        segment_file(tmp_path / "scan.nii.gz", tmp_path / "out" / "seg.nii.gz", SlicePredictor(FailsMidway(), 32),
                     SPEC, batch_size=2)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

    def dies_while_writing(image, filename):
        Path(filename).write_bytes(b"half a file")
        raise OSError("no space left on device")

    monkeypatch.setattr(nifti.nib, "save", dies_while_writing)
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32))
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out" / "seg.nii.gz"),
                         "--ckpt", str(ckpt), "--no-progress"]) == 1
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("problem", ["nan", "4d", "truncated", "missing"])
def test_bad_input_scan_is_reported(tmp_path: Path, monkeypatch, capsys, problem: str) -> None:
    path = tmp_path / "scan.nii.gz"
    data = np.ones((8, 8, 8, 2) if problem == "4d" else (8, 8, 8), np.float32)
    if problem == "nan":
        data[1, 1, 1] = np.nan
    if problem != "missing":
        nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=data.shape).astype(np.float32) * data, np.eye(4)), path)
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:400])
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32))
    assert segment_main(["-i", str(path), "-o", str(tmp_path / "seg.nii.gz"), "--ckpt", str(ckpt), "--no-progress"]) == 1
    assert "scan.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_labels_are_written_in_the_checkpoints_own_dataset_codes(tmp_path: Path, monkeypatch) -> None:
    scan, blob = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    four = DataSpec(("spleen", "right kidney", "left kidney", "liver"), (1, 2, 3, 6))  # BTCV's codes
    ckpt = use_model(monkeypatch, tmp_path, ThresholdSegmentor(image_size=32, cls=4, spec=four))
    args = ["-i", str(tmp_path / "scan.nii.gz"), "--ckpt", str(ckpt), "--no-progress"]
    assert segment_main(args + ["-o", str(tmp_path / "codes.nii.gz")]) == 0
    assert segment_main(args + ["-o", str(tmp_path / "index.nii.gz"), "--codes", "index"]) == 0
    codes = np.asanyarray(nib.load(tmp_path / "codes.nii.gz").dataobj)
    assert set(np.unique(codes)) == {0, 6} and dice(codes == 6, blob) > 0.9  # class 4 is "liver", code 6
    assert set(np.unique(np.asanyarray(nib.load(tmp_path / "index.nii.gz").dataobj))) == {0, 4}


@pytest.mark.parametrize("content", ["foreign", "no_segmentor", "missing"])
def test_checkpoint_of_something_else_is_refused(tmp_path: Path, monkeypatch, capsys, content: str) -> None:
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    ckpt = tmp_path / "other.ckpt"
    if content == "foreign":
        torch.save({"state_dict": {}, "hyper_parameters": {}}, ckpt)  # a Lightning checkpoint, not mkdseg's
    elif content == "no_segmentor":
        ckpt = use_model(monkeypatch, tmp_path, torch.nn.Linear(1, 1))  # e.g. a translation-only model
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--ckpt", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert ckpt.name in err and {"foreign": "not an mkdseg checkpoint", "no_segmentor": "no segmentor",
                                 "missing": "not found"}[content] in err
    assert not (tmp_path / "seg.nii.gz").exists()


# -- locating the heart ---------------------------------------------------------------------------

def test_locate_keeps_each_structures_largest_component_and_covers_sampling_gaps() -> None:
    coarse = np.zeros((20, 20, 6), np.uint8)
    coarse[2:4, 2:4, 0] = 1  # small false positive of structure 1
    coarse[8:15, 5:12, 2:5] = 1  # structure 1, on sampled slices 2..4
    coarse[16:18, 14:18, 3] = 2  # structure 2, apart from structure 1 (a kidney beside the liver)
    sampled = np.arange(6) * 4 + 2  # every 4th slice of a 26-slice volume, starting at 2
    assert locate_structures(coarse, sampled, 26) == ((8, 18), (5, 18), (7, 22))
    assert locate_structures(np.zeros((4, 4, 2), np.uint8), np.arange(2), 2) is None
