"""A run's final weights are in ``last.ckpt`` whatever ``max_steps``, and the run folder carries the method's
name: tiny ``mkdseg fit --config configs/demo.yaml`` runs, in-process (the CLI's defaults, the shipped config)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mkdseg.cli import build_cli

from conftest import REPO, TINY_MODEL, make_datamodule, make_model, quiet_trainer

DEMO = str(REPO / "configs" / "demo.yaml")
# configs/demo.yaml at the tests' sizes: one iteration per epoch, a validation every 2
TINY_DATA = ["--data.image_size=32", "--data.phantom_subjects=4", "--data.phantom_slices=8", "--data.batch_size=2",
             "--data.samples_per_epoch=2", "--data.augment=false"]
TINY_SEG = ["--model.init_args.seg_channels=[4, 8, 16]", "--model.init_args.seg_strides=[2, 2]",
            "--model.init_args.eval_batch_size=8"]
TINY_MKD = TINY_SEG + [f"--model.init_args.{k}={TINY_MODEL[k]}"
                       for k in ("gen_filters", "gen_blocks", "disc_filters", "disc_layers", "pool_size")]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # in-process runs, under pytest's argv
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=2"]


def fit(run_dir: Path, phantom_root: Path, max_steps: int, *extra: str):
    args = ["fit", "--config", DEMO, *TINY_DATA, *QUIET, f"--data.root={phantom_root}",
            f"--trainer.default_root_dir={run_dir}", f"--trainer.max_steps={max_steps}", *extra]
    return build_cli(args)


def test_last_checkpoint_holds_the_final_step_and_extends_from_it(tmp_path, phantom_root):
    """max_steps=3 ends on an epoch boundary that is no validation step: the epoch-end save finds no better
    val/dice than the step-2 one, so Lightning leaves last.ckpt at step 2; mkdseg saves step 3 there too."""
    run_dir = tmp_path / "run"
    cli = fit(run_dir, phantom_root, 3, "--model=mkdseg.methods.MKDModule", *TINY_MKD,
              "--trainer.logger.init_args.version=v")
    assert cli.trainer.global_step == 3
    checkpoints = run_dir / "mkd" / "v" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best-step=2.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 3

    # "train 2 more iterations": the extension starts where the run ended (step 3), not at the last save
    extended = fit(run_dir, phantom_root, 5, "--model=mkdseg.methods.MKDModule", *TINY_MKD,
                   "--trainer.logger.init_args.version=v", "--ckpt_path", str(checkpoints / "last.ckpt"),
                   '--trainer.callbacks+={"class_path": "test_last_checkpoint.TrainedSteps"}')
    trained = next(c for c in extended.trainer.callbacks if isinstance(c, TrainedSteps))
    assert trained.steps == [3, 4]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 5


class TrainedSteps(L.Callback):
    """The global step at the start of every iteration this run trains."""

    def __init__(self):
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(trainer.global_step)


@pytest.mark.parametrize("save_last", [True, "link"])
def test_final_last_checkpoint_callback_saves_the_final_step(tmp_path, phantom_root, save_last):
    """The callback on its own, with a ModelCheckpoint as a config lists it: last.ckpt is a file holding the
    final step (also for save_last="link", which Lightning would link to the older best checkpoint)."""
    from mkdseg.callbacks import FinalLastCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/dice", mode="max", filename="best-{step}",
                                 save_last=save_last, save_on_train_epoch_end=True)
    trainer = quiet_trainer(max_steps=3, callbacks=[FinalLastCheckpoint(), checkpoint], enable_checkpointing=True,
                            limit_val_batches=1.0, val_check_interval=2, check_val_every_n_epoch=None)
    trainer.fit(make_model(), datamodule=make_datamodule(phantom_root, samples_per_epoch=2))
    last = tmp_path / "last.ckpt"
    assert not last.is_symlink() and torch.load(last, weights_only=False)["global_step"] == 3
    assert torch.load(tmp_path / "best-step=2.ckpt", weights_only=False)["global_step"] == 2  # not overwritten
    assert checkpoint.last_model_path == str(last)


@pytest.mark.parametrize(("extra", "folder"), [([], "joint_training"),
                                               (["--trainer.logger.init_args.name=mine"], "mine")])
def test_run_folder_is_named_after_the_method(tmp_path, phantom_root, extra, folder):
    """Joint training started from configs/demo.yaml (an MKD config) logs under joint_training/, not mkd/;
    a name the user sets wins."""
    run_dir = tmp_path / "run"
    cli = fit(run_dir, phantom_root, 1, "--model=mkdseg.methods.JointTraining", *TINY_SEG, *extra)
    assert type(cli.model).__name__ == "JointTraining"
    assert [p.name for p in run_dir.iterdir()] == [folder]
    assert Path(cli.trainer.log_dir) == run_dir / folder / "version_0"
    assert (run_dir / folder / "version_0" / "checkpoints" / "last.ckpt").exists()


def test_method_name_and_which_logger_names_are_defaults():
    from types import SimpleNamespace as NS

    from mkdseg.cli import method_name, name_run_after_method

    assert [method_name(f"mkdseg.methods.{c}") for c in ("MKDModule", "JointTraining", "MKDNoAlignment", "Baseline")] \
        == ["mkd", "joint_training", "mkd_no_alignment", "baseline"]
    loggers = [NS(class_path="lightning.pytorch.loggers.CSVLogger", init_args=NS(name="lightning_logs")),  # default
               NS(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=NS(name="mine")),  # user's
               NS(class_path="lightning.pytorch.loggers.WandbLogger", init_args=NS(name=None))]  # W&B names it
    name_run_after_method(NS(model=NS(class_path="mkdseg.methods.MeanTeacher"), trainer=NS(logger=loggers)))
    assert [logger.init_args.name for logger in loggers] == ["mean_teacher", "mine", None]
