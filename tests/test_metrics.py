"""Per-structure volume metrics and the empty-structure policy."""

import math

import numpy as np
import pytest

from mkdseg.labels import MMWHS
from mkdseg.metrics import format_table, summarize, volume_scores

CARDIAC = [name for name, _ in MMWHS]


def _volume():
    gt = np.zeros((4, 10, 10), dtype=np.uint8)
    gt[1:3, 2:6, 2:6] = 1  # MYO: 2*4*4 = 32 voxels
    gt[0:2, 6:9, 6:9] = 3  # LV: 18 voxels
    return gt


def test_perfect_prediction_scores_one_and_zero_distance():
    gt = _volume()
    scores = volume_scores(gt, gt, CARDIAC, with_assd=True)
    assert scores["MYO"]["dice"] == pytest.approx(1.0)
    assert scores["LV"]["dice"] == pytest.approx(1.0)
    assert scores["MYO"]["assd"] == pytest.approx(0.0)


def test_dice_matches_hand_computation():
    gt = _volume()
    pred = gt.copy()
    pred[1, 2:6, 2:6] = 0  # remove half of MYO: 16 of 32 voxels predicted
    assert volume_scores(pred, gt, CARDIAC)["MYO"]["dice"] == pytest.approx(2 * 16 / (16 + 32))


def test_empty_structure_policy():
    gt = _volume()
    pred = gt.copy()
    pred[3, 0, 0] = 2  # LA predicted but absent from ground truth
    scores = volume_scores(pred, gt, CARDIAC, with_assd=True)
    assert scores["LA"]["dice"] == 0.0  # false positive: Dice 0
    assert math.isnan(scores["LA"]["assd"])  # no surface to measure against
    assert math.isnan(scores["RA"]["dice"])  # absent from both: undefined, left out of means
    pred[gt == 3] = 0
    assert volume_scores(pred, gt, CARDIAC)["LV"]["dice"] == 0.0  # missed entirely


def test_assd_uses_voxel_spacing():
    gt = np.zeros((1, 20, 20), dtype=np.uint8)
    gt[0, 5:10, 5:10] = 1
    pred = np.roll(gt, 1, axis=2)  # shifted one column
    d1 = volume_scores(pred, gt, CARDIAC, spacing=(1, 1, 1), with_assd=True)["MYO"]["assd"]
    d2 = volume_scores(pred, gt, CARDIAC, spacing=(1, 1, 2.5), with_assd=True)["MYO"]["assd"]
    assert d1 > 0 and d2 == pytest.approx(2.5 * d1, rel=1e-5)


def test_summary_ignores_undefined_values_and_counts_volumes():
    rows = [
        {"predictor": "ens", "subject": "a", "structure": "MYO", "dice": 0.8},
        {"predictor": "ens", "subject": "a", "structure": "LA", "dice": float("nan")},
        {"predictor": "ens", "subject": "b", "structure": "MYO", "dice": 0.6},
        {"predictor": "ens", "subject": "b", "structure": "LA", "dice": 0.4},
    ]
    s = summarize(rows)["ens"]
    assert s["MYO"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1), "n": 2}
    assert s["LA"]["n"] == 1 and s["LA"]["mean"] == pytest.approx(0.4)
    assert s["mean"]["mean"] == pytest.approx((0.8 + 0.5) / 2)  # per-volume means 0.8 and 0.5
    table = format_table(summarize(rows))
    assert "| ens | 65.00 ± 15.00 | 70.00 ± 10.00 | 40.00 ± 0.00 |" in table


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must be equal"):
        volume_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), CARDIAC)
