"""The real-data path end to end on the shared MM-WHS slices: convert, preprocess, train, test, segment."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from mkdseg.cli import build_cli, main
from mkdseg.data.preprocess import preprocess_nnunet

from conftest import SHARED_DATA, TINY_MODEL

MMWHS = SHARED_DATA / "mmwhs_sifa"
pytestmark = pytest.mark.skipif(not MMWHS.is_dir(), reason=f"shared real data not found at {MMWHS}")


def test_preprocess_train_test_segment_on_shared_mmwhs(tmp_path):
    cache = tmp_path / "cache"
    for modality in ("ct", "mr"):  # the files as shipped, in MM-WHS naming
        assert main(["convert", "mmwhs", "--src", str(MMWHS), "--modality", modality, "--out", str(tmp_path / modality)]) == 0
    preprocess_nnunet(tmp_path / "ct", tmp_path / "mr", cache, image_size=32, progress=False)
    run_dir = tmp_path / "run"
    model_args = [f"--model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY_MODEL.items() if k != "image_size"]
    common = [
        "--model.class_path=mkdseg.methods.MKDModule", *model_args,
        "--data.source=cache", f"--data.root={cache}", "--data.image_size=32", "--data.batch_size=2",
        "--data.samples_per_epoch=4", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run_dir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    ]
    # one CT subject trains, the other is the test: none to spare for validation, so the last weights are tested
    with pytest.warns(UserWarning, match="no checkpoint selection"):
        cli = build_cli(["fit", *common, "--trainer.max_steps=3", "--trainer.val_check_interval=3",
                         "--trainer.check_val_every_n_epoch=null", "--trainer.num_sanity_val_steps=0",
                         "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                         "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_on_train_epoch_end=true"])
    ckpt = cli.trainer.checkpoint_callback.last_model_path or cli.trainer.checkpoint_callback.best_model_path
    assert ckpt, "fit wrote no checkpoint"
    # the two CT subjects were split by subject: one trains, one is held out
    split = json.loads((cache / "splits_ct_2fold.json").read_text())["folds"]
    assert sorted(s for f in split for s in f) == ["mmwhs_ct_9001", "mmwhs_ct_9002"]

    test_cli = build_cli(["test", *common, f"--ckpt_path={ckpt}"])
    log_dir = test_cli.trainer.log_dir
    rows = list(csv.DictReader(open(f"{log_dir}/per_case.csv")))
    held_out = {r["subject"] for r in rows}
    assert len(held_out) == 1 and held_out <= {"mmwhs_ct_9001", "mmwhs_ct_9002"}
    summary = json.loads(open(f"{log_dir}/summary.json").read())
    # four structures are labelled in these slices; their ASSD is finite wherever both surfaces exist
    labelled = {"MYO", "LA", "LV", "AA"}
    ens_rows = [r for r in rows if r["predictor"] == "ens"]
    assert {r["structure"] for r in ens_rows if r["dice"] != ""} >= labelled
    assert summary["dice"]["ens"]["MYO"]["n"] == 1

    out = tmp_path / "seg.nii.gz"
    image = MMWHS / "ct_train_9001_image.nii.gz"
    assert main(["segment", "-i", str(image), "-o", str(out), "--ckpt", ckpt, "--no-progress", "--precision", "fp32"]) == 0
    source, result = nib.load(image), nib.load(out)
    assert result.shape == source.shape and np.allclose(result.affine, source.affine)
    assert set(np.unique(np.asarray(result.dataobj))) <= set(range(8))  # the dataset's labels, 1..7
    # the release's own codes, which the converted dataset recorded and the checkpoint carries
    original = tmp_path / "seg_original.nii.gz"
    assert main(["segment", "-i", str(image), "-o", str(original), "--ckpt", ckpt, "--no-progress", "--precision", "fp32",
                 "--codes", "original"]) == 0
    written = np.asarray(nib.load(original).dataobj)
    assert set(np.unique(written)) <= {0, 205, 420, 500, 550, 600, 820, 850}
    assert np.array_equal(written > 0, np.asarray(result.dataobj) > 0)  # the same map, other values
