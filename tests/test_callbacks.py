"""The Dice table and the sample figures reach the logger: TensorBoard, and W&B offline with no account."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from mkdseg.callbacks import DiceTableCallback, SampleImagesCallback

from conftest import make_datamodule, make_model, quiet_trainer


def _fit_and_test(tmp_path, phantom_root, logger):
    trainer = quiet_trainer(
        max_steps=2, val_check_interval=2, limit_val_batches=None, logger=logger, default_root_dir=str(tmp_path),
        callbacks=[DiceTableCallback(), SampleImagesCallback(n_samples=2)],
    )
    dm = make_datamodule(phantom_root, samples_per_epoch=4)
    model = make_model()
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return trainer


def test_tensorboard_gets_table_text_and_figures(tmp_path, phantom_root):
    trainer = _fit_and_test(tmp_path, phantom_root, TensorBoardLogger(str(tmp_path), name="tb"))
    log_dir = trainer.log_dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert "samples/val" in tags["images"] and "samples/test" in tags["images"]
    assert any(t.startswith("val/dice_table") for t in tags["tensors"])
    table = (tmp_path / "tb" / "version_0" / "dice_test.md").read_text()
    assert table.startswith("| Dice | mean | MYO |") and "| ens |" in table
    figure = plt.imread(tmp_path / "tb" / "version_0" / "samples" / "test.png")
    # a row per sample (3) under 3 translation + 2 target + 3 prediction panels: wider than high, and drawn
    assert figure.shape[1] > 2 * figure.shape[0] > 400 and figure[..., :3].std() > 0.1


def test_wandb_offline_gets_table_and_images_without_account(tmp_path, phantom_root, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="mkdseg-test")
    trainer = _fit_and_test(tmp_path, phantom_root, logger)
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    assert any((media / "table" / "test").rglob("*.table.json")), "no Dice table logged"
    assert any((media / "table" / "val").rglob("*.table.json")), "no validation Dice table logged"
    assert any((media / "images" / "samples").rglob("*.png")), "no sample figure logged"
    import json

    table = json.loads(next((media / "table" / "test").rglob("*.table.json")).read_text())
    assert table["columns"][:3] == ["predictor", "mean", "MYO"]
    assert sorted(row[0] for row in table["data"]) == ["ens", "real", "syn"]
    ens = next(row for row in table["data"] if row[0] == "ens")
    assert float(trainer.callback_metrics["test/dice_ens"]) == pytest.approx(ens[1])  # the table's mean is the logged one


def test_samples_come_from_the_stage_just_evaluated(phantom_root):
    """Validation figures show validation subjects, test figures held-out test subjects (never mixed)."""
    dm = make_datamodule(phantom_root, n_val=1)
    dm.setup("fit")
    for stage, records in (("val", dm.val_records), ("test", dm.test_records)):
        x_t, y_t, x_a = dm.sample_slices(stage, 3)
        assert x_t.shape == (3, 1, 32, 32) and y_t.shape == (3, 32, 32) and x_a.shape == (3, 1, 32, 32)
        first, label = dm.cache.load(records[0])
        middle = records[0].n_slices // 2 - 1
        assert torch.equal(x_t[0, 0], torch.from_numpy(first[middle].copy()))
        assert torch.equal(y_t[0], torch.from_numpy(label[middle].astype("int64")))
    no_validation = make_datamodule(phantom_root, n_val=0)
    no_validation.setup("fit")
    assert no_validation.sample_slices("val", 3) is None  # no validation subjects: no validation figure
    model = make_model()
    outputs = model.sample_outputs(x_t, x_a)
    assert set(outputs["segmentation"]) == {"syn", "real", "ens"} and outputs["segmentation"]["ens"].shape == (3, 32, 32)
    fake_t, rec_a = outputs["translation"]
    assert fake_t.shape == rec_a.shape == x_a.shape and model.training  # back in the mode it was in
