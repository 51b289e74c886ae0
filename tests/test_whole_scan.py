"""What a user gets: scans cut without a label (the body's box, every slice), training that sees such slices,
and scores in each scan's own grid against its own label file (`mkdseg evaluate`, `mkdseg test`)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from mkdseg.cli import main
from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.datasets import SliceSet
from mkdseg.data.intensity import intensity_window
from mkdseg.data.roi import body_box
from mkdseg.labels import DataSpec, Structure
from mkdseg.metrics import volume_scores, worst_volumes


def _phantom_body(shape=(80, 60, 20), spacing=(2.0, 2.0, 5.0)) -> np.ndarray:
    """Noisy air (-1000 HU) with an elliptic body (40 HU) at x 20..60, y 15..45, and a bright speck far outside
    it on two slices."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    body = ((x - 40) / 20.5) ** 2 + ((y - 30) / 15.5) ** 2 <= 1
    volume = np.full(shape, -1000.0, dtype=np.float32)
    volume[body] = 40.0
    volume[2:4, 55:58, :2] = 300.0  # noise on 2 of 20 slices: not body
    return volume + np.random.default_rng(0).normal(0, 20, shape).astype(np.float32)


def test_body_box_holds_the_body_on_every_slice_and_leaves_the_speck_out():
    volume, spacing = _phantom_body(), (2.0, 2.0, 5.0)
    box = body_box(volume, intensity_window(volume), spacing, margin_mm=4.0)
    assert box.z == (0, 20)  # every slice: the organs' slab is not known without a label
    (x0, x1), (y0, y1) = box.x, box.y
    assert x0 <= 20 and x1 >= 61 and y0 <= 15 and y1 >= 46  # the body, with its margin
    assert x0 > 4  # the speck at x 2..3 did not widen it
    assert (x1 - x0) * spacing[0] == pytest.approx((y1 - y0) * spacing[1], abs=2 * spacing[1])  # square in mm


def test_body_box_of_a_blank_scan_is_the_whole_slice():
    volume = np.zeros((30, 20, 4), dtype=np.float32)
    box = body_box(volume, intensity_window(volume), (1.0, 1.0, 1.0))
    assert box.x[0] <= 0 and box.x[1] >= 30 and box.y[0] <= 0 and box.y[1] >= 20 and box.z == (0, 4)


def _cache_with_sparse_structures(root):
    """One volume of 10 slices, a structure on 2 of them."""
    cache = SliceCache(root, source="nnunet")
    label = np.zeros((10, 8, 8), np.uint8)
    label[4:6, 2:4, 2:4] = 1
    record = VolumeRecord(subject="a", modality="ct", n_slices=10, image_file="", plane="RA")
    cache.write_volume(record, np.zeros((10, 8, 8), np.float32), label)
    cache.structures = [Structure("liver", {"ct": 6})]
    cache.save()
    return cache, record


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.8])
def test_foreground_fraction_is_the_share_of_draws_on_slices_with_a_structure(tmp_path, fraction):
    cache, record = _cache_with_sparse_structures(tmp_path)
    slices = SliceSet(cache, [record], foreground_fraction=fraction)
    shown = sum(1 for _, s in slices.index if s in (4, 5)) / len(slices)
    assert shown >= fraction and (fraction == 0 or shown < fraction + 0.15)
    assert {s for _, s in slices.index} == set(range(10))  # every slice is still drawn
    unlabelled = SliceSet(cache, [record], labelled=False, foreground_fraction=fraction)
    assert len(unlabelled) == 10  # no label is read for unlabelled slices, so nothing is oversampled


def test_foreground_fraction_out_of_range_is_an_error(tmp_path):
    cache, record = _cache_with_sparse_structures(tmp_path)
    with pytest.raises(ValueError, match="foreground_fraction"):
        SliceSet(cache, [record], foreground_fraction=1.0)


def test_a_data_spec_without_a_field_of_view_means_structure_crops():
    old = {"structures": ["liver"], "codes": [6], "modality": "ct", "slice_axis": 2, "margin_mm": 10.0}
    assert DataSpec.from_dict(old).field_of_view == "structures"
    spec = DataSpec(("liver", "spleen"), (6, 1), field_of_view="body")
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="field_of_view"):
        DataSpec(("liver",), (6,), field_of_view="label")
    codes = np.array([0, 6, 1, 3, 13])  # codes the run does not segment are background
    assert spec.codes_to_classes(codes).tolist() == [0, 1, 2, 0, 0]


def test_dice_from_voxel_counts_matches_its_definition():
    rng = np.random.default_rng(1)
    pred, truth = rng.integers(0, 4, (6, 9, 7)), rng.integers(0, 4, (6, 9, 7))
    pred[..., 0] = np.where(pred[..., 0] == 3, 0, pred[..., 0])
    truth[truth == 3] = 0
    pred[pred == 3] = 0  # structure 3 in neither: undefined
    scores = volume_scores(pred, truth, ["a", "b", "c"])
    for c, name in enumerate(["a", "b"], start=1):
        p, t = pred == c, truth == c
        assert scores[name]["dice"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
    assert np.isnan(scores["c"]["dice"])


def test_worst_volume_is_the_lowest_mean_over_its_defined_structures():
    rows = [{"predictor": "seg", "subject": s, "structure": k, "dice": d}
            for s, k, d in [("a", "x", 0.9), ("a", "y", 0.1), ("b", "x", 0.6), ("b", "y", float("nan"))]]
    assert worst_volumes(rows) == {"seg": {"subject": "a", "dice": pytest.approx(0.5)}}


# -- mkdseg evaluate -----------------------------------------------------------------------------------
def _dataset(tmp_path, n=3):
    """labelsTr/ with dataset.json beside it (codes 1 liver, 2 spleen, 5 other), and predictions named as
    `mkdseg segment` names them (with the _0000 channel suffix)."""
    rng = np.random.default_rng(0)
    root, pred = tmp_path / "Dataset", tmp_path / "pred"
    (root / "labelsTr").mkdir(parents=True)
    pred.mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "liver": 1, "spleen": 2, "other": 5}}))
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for i in range(n):
        truth = np.zeros((20, 16, 6), np.int16)
        truth[2:10, 2:10, 1:5] = 1
        truth[12:18, 8:14, 2:4] = 2
        truth[0, 0, 0] = 5
        guess = truth.copy()
        if i == 1:
            guess[guess == 2] = 0  # misses the spleen: the worst scan
        guess[rng.integers(0, 20), rng.integers(0, 16), 5] = 1
        nib.save(nib.Nifti1Image(truth, affine), root / "labelsTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(guess, affine), pred / f"case_{i}_0000.nii.gz")
    return root, pred


def test_evaluate_scores_each_scan_per_structure_and_names_the_worst(tmp_path, capsys):
    root, pred = _dataset(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--labels", str(root / "labelsTr"), "--structures", "spleen,liver"]) == 0
    rows = list(csv.DictReader(open(pred / "per_case.csv")))
    assert {(r["subject"], r["structure"]) for r in rows} == {(f"case_{i}", s) for i in range(3) for s in ("spleen", "liver")}
    by = {(r["subject"], r["structure"]): r for r in rows}
    assert float(by["case_1", "spleen"]["dice"]) == 0 and float(by["case_0", "spleen"]["dice"]) == 1
    assert 0.99 < float(by["case_0", "liver"]["dice"]) < 1  # one stray voxel
    assert float(by["case_0", "liver"]["assd"]) > 0  # in mm of the scan's own grid
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["worst_case"]["prediction"]["subject"] == "case_1"
    assert list(summary["dice"]["prediction"]) == ["spleen", "liver", "mean"]
    assert "worst scan: case_1" in capsys.readouterr().out


@pytest.mark.parametrize("breakage, message", [
    ("missing label", "no label file of case 'case_2'"),
    ("other grid", "does not lie on the grid of its label file"),
    ("unknown structure", "no label 'kidney'"),
])
def test_evaluate_errors_name_the_file_or_option(tmp_path, capsys, breakage, message):
    root, pred = _dataset(tmp_path)
    structures = "liver"
    if breakage == "missing label":
        (root / "labelsTr" / "case_2.nii.gz").unlink()
    elif breakage == "other grid":
        nib.save(nib.Nifti1Image(np.zeros((20, 16, 5), np.int16), np.eye(4)), pred / "case_0_0000.nii.gz")
    else:
        structures = "kidney"
    assert main(["evaluate", "--pred", str(pred), "--labels", str(root / "labelsTr"), "--structures", structures]) == 1
    assert message in capsys.readouterr().err
    assert not (pred / "summary.json").exists()  # nothing half-written
