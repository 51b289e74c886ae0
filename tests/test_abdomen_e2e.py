"""The real abdominal MR -> CT benchmark end to end: two nnU-Net datasets -> cache -> fit -> test ->
predict -> segment, with BTCV's own codes and the scan's exact geometry."""

from __future__ import annotations

import csv
import json
import sys

import nibabel as nib
import numpy as np
import pytest

from mkdseg.cli import main
from mkdseg.data.preprocess import preprocess_nnunet
from mkdseg.methods import SegmentationMethod

from conftest import REPO, SHARED_DATA, TINY_MODEL

ABDOMEN = SHARED_DATA / "abdomen_chaos_btcv"
pytestmark = pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"shared real data not found at {ABDOMEN}")
BTCV_CODES = {"spleen": 1, "right kidney": 2, "left kidney": 3, "liver": 6}
# the files are read as their headers say (wrong headers, declared with --target-orientation: test_any_anatomy.py)


@pytest.fixture(scope="module")
def abdomen_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("abdomen") / "cache"
    return preprocess_nnunet(ABDOMEN / "ct_btcv", ABDOMEN / "mr_chaos", out, image_size=32, max_cases=4, progress=False)


def test_the_four_shared_organs_in_btcv_order_and_one_anatomy_in_both_modalities(abdomen_cache):
    cache = abdomen_cache
    assert cache.structure_names == list(BTCV_CODES)
    assert [s.codes["ct"] for s in cache.structures] == list(BTCV_CODES.values())
    assert [s.codes["mri"] for s in cache.structures] == [4, 2, 3, 1]
    assert cache.slice_axis == 2  # 3 mm and 7.7 mm along the third axis: transverse slices
    liver, right_kidney, left_kidney = 4, 2, 3
    for record in cache.volumes():
        _, label = cache.load(record, mmap=False)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        rows = lambda c: np.nonzero(label == c)[1].mean()  # noqa: E731  (rows run to the patient's right)
        cols = lambda c: np.nonzero(np.isin(label, c))[2].mean()  # noqa: E731  (columns run to anterior)
        # CT and MR alike after reorientation: liver and right kidney on the patient's right, the liver in
        # front of the kidneys
        assert rows(liver) > rows(left_kidney) and rows(right_kidney) > rows(left_kidney), record.key
        assert cols(liver) > cols((right_kidney, left_kidney)), record.key
        # the field of view a scan without a label has: every slice of it, the labels' slab not known
        assert record.slice_indices == list(range(record.original_shape[2])), record.key
        assert record.extra["source_label_path"].endswith(f"labelsTr/{record.subject}.nii.gz")


def test_fit_test_predict_segment_in_one_run_folder(abdomen_cache, tmp_path, monkeypatch):
    # Dice only in the test: surface distances of a 3-iteration model's scattered voxels over whole CTs were most of
    # this test's time (ASSD in a test: tests/test_real_data_e2e.py; the metric: tests/test_metrics.py)
    monkeypatch.setattr(SegmentationMethod, "assd_in_test", False)
    run = tmp_path / "run"
    model = [f"--model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY_MODEL.items() if k != "image_size"]
    common = ["--config", str(REPO / "configs/demo.yaml"), "--config", str(REPO / "configs/data/abdomen.yaml"), *model,
              f"--data.root={abdomen_cache.root}", "--data.image_size=32", "--data.batch_size=2", "--data.n_val=1",
              "--data.samples_per_epoch=4", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={run}"]
    assert main(["fit", *common, "--trainer.max_steps=3", "--trainer.val_check_interval=3"]) == 0
    # everything of the run in the folder the one option named (the config's logger has no say)
    version = run / "mkd" / "version_0"
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(n.startswith("best-") for n in checkpoints)
    assert (version / "config.yaml").exists() and list((version / "samples").glob("val_step3.png"))
    ckpt = version / "checkpoints" / "last.ckpt"

    assert main(["test", *common, f"--ckpt_path={ckpt}"]) == 0
    tested = run / "mkd" / "version_1"
    rows = list(csv.DictReader(open(tested / "per_case.csv")))
    assert {r["structure"] for r in rows} == set(BTCV_CODES)
    split = json.loads((abdomen_cache.root / "splits_ct_2fold.json").read_text())["folds"]
    assert {r["subject"] for r in rows} == set(split[0])  # the held-out fold, nothing else
    summary = json.loads((tested / "summary.json").read_text())
    assert set(summary["dice"]["ens"]) == {"mean", *BTCV_CODES}

    assert main(["predict", *common, f"--ckpt_path={ckpt}"]) == 0
    predicted = sorted((run / "mkd" / "version_2" / "predictions").glob("*.nii.gz"))
    assert [p.name for p in predicted] == [f"{s}.nii.gz" for s in sorted(split[0])]
    source = nib.load(ABDOMEN / "ct_btcv" / "imagesTr" / f"{split[0][0]}_0000.nii.gz")
    written = nib.load(predicted[0])
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, *BTCV_CODES.values()}

    # the test's score is what a user gets: predict's label maps, scored against the scans' own label files by
    # `mkdseg evaluate`, give the test's numbers exactly
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", "--pred", str(predicted[0].parent), "--labels", str(ABDOMEN / "ct_btcv" / "labelsTr"),
                 "--structures", ",".join(BTCV_CODES), "--out", str(evaluated), "--no-assd"]) == 0
    by_evaluate = {(r["subject"], r["structure"]): r["dice"] for r in csv.DictReader(open(evaluated / "per_case.csv"))}
    assert by_evaluate == {(r["subject"], r["structure"]): r["dice"] for r in rows if r["predictor"] == "ens"}

    scan = ABDOMEN / "ct_btcv" / "imagesTr" / f"{split[0][0]}_0000.nii.gz"
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", "-i", str(scan), "-o", str(out), "--ckpt", str(ckpt), "--no-progress", "--precision", "fp32"]) == 0
    source, result = nib.load(scan), nib.load(out)
    assert result.shape == source.shape and np.array_equal(result.affine, source.affine)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)  # written back in the file's own orientation
    assert set(np.unique(np.asanyarray(result.dataobj))) <= {0, *BTCV_CODES.values()}
    # segment cuts the scan as preprocessing cut it, without its label: the map predict wrote for the same scan
    same = np.asanyarray(result.dataobj) == np.asanyarray(written.dataobj)
    assert same.mean() > 0.999, same.mean()



def test_located_score_scores_a_runs_weights_on_both_fields_of_view(abdomen_cache, tmp_path):
    """benchmarks/located_score.py at a tiny size: a one-step run of a study, its weights scored on the whole scans
    and on the same scans cut around their labelled organs."""
    import lightning as L
    import yaml

    from benchmarks import located_score

    from mkdseg.data import UnpairedSliceDataModule
    from mkdseg.methods import Baseline

    located = preprocess_nnunet(ABDOMEN / "ct_btcv", ABDOMEN / "mr_chaos", tmp_path / "located", image_size=32, max_cases=4,
                                field_of_view="structures", progress=False)
    run = tmp_path / "study" / "runs" / "baseline-0" / "fold0-seed0"
    data = UnpairedSliceDataModule(source="cache", root=str(abdomen_cache.root), n_val=0, batch_size=2, samples_per_epoch=2)
    model = Baseline(image_size=32, data_spec=data.data_spec, seg_channels=(4, 8, 16), seg_strides=(2, 2))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(run / "logs" / "version_0" / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(abdomen_cache.root)}}))
    (run / "result.json").write_text(json.dumps({"config": "baseline", "fold": 0, "seed": 0}))
    assert located_score.main(["--study", str(tmp_path / "study"), "--located", str(located.root), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "runs.csv")))
    split = json.loads((abdomen_cache.root / "splits_ct_2fold.json").read_text())["folds"][0]
    assert [r["subject"] for r in rows] == split and all(0 <= float(r[k]) <= 1 for r in rows for k in ("whole", "located"))
    assert "| baseline | 1 |" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit):  # the located cache must be cut around the structures
        located_score.main(["--study", str(tmp_path / "study"), "--located", str(abdomen_cache.root), "--out", str(tmp_path / "x")])
