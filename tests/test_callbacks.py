"""The Dice table and the sample figures reach the logger: TensorBoard, and W&B offline with no account."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

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
