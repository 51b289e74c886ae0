"""What is logged besides scalars: the per-structure Dice table and translation/segmentation samples.

Both work with any logger: W&B (``WandbLogger``, also offline) gets tables and images, TensorBoard gets
text and figures, and every logger also gets the files written next to its logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from mkdseg.io import atomic_write_text
from mkdseg.lightning_private import save_final_last_checkpoint
from mkdseg.metrics import format_table
from mkdseg.visualize import close_figure, sample_figure


def run_dir(trainer: L.Trainer) -> Path:
    # trainer.log_dir broadcasts from rank 0 under DDP: call it on every rank, never inside @rank_zero_only
    return Path(trainer.log_dir or trainer.default_root_dir)


class DiceTableCallback(L.Callback):
    """After each validation and test: the per-structure Dice table of every predictor, as markdown."""

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val", run_dir(trainer))

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test", run_dir(trainer))

    @rank_zero_only
    def _log(self, trainer: L.Trainer, pl_module, stage: str, out_dir: Path) -> None:
        try:
            summary = pl_module.evaluation_summary(stage)
        except (AttributeError, LookupError):  # not an mkdseg method, or nothing evaluated
            return
        table = format_table(summary["dice"])
        atomic_write_text(out_dir / f"dice_{stage}.md", table + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                structures = [k for k in next(iter(summary["dice"].values())) if k != "mean"]
                columns = ["predictor", "mean", *structures]
                rows = [[p] + [entry[c]["mean"] for c in columns[1:]] for p, entry in summary["dice"].items()]
                logger.log_table(key=f"{stage}/dice_table", columns=columns, data=rows)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(f"{stage}/dice_table", table, global_step=trainer.global_step)


class FinalLastCheckpoint(L.Callback):
    """Every ``ModelCheckpoint(save_last=...)`` of the run also saves the final weights in its ``last.ckpt``.

    Lightning (2.6) writes ``last.ckpt`` only together with another checkpoint of the same step: a run whose
    ``max_steps`` falls after its last validation, or whose epoch-end save finds no better monitored value,
    ends with ``last.ckpt`` at an older step, so testing it tests old weights and extending the run (fit to a
    larger ``max_steps`` with ``--ckpt_path last.ckpt``) repeats iterations. At the end of training this saves
    ``last.ckpt`` of each such callback whose last save is older than ``trainer.global_step``; a run interrupted
    by an exception is left to ``ModelCheckpoint(save_on_exception=...)``. Works with the ModelCheckpoint a
    config lists, unchanged (``mkdseg fit`` adds this callback to every run).
    """

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        for checkpoint in trainer.checkpoint_callbacks:
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.save_last:
                save_final_last_checkpoint(checkpoint, trainer)


class MetricHistory(L.Callback):
    """Writes every validation's ``val/*`` metrics to ``path`` as JSON, ``{metric: [value per validation]}``,
    and the iteration each was taken after as ``"step"``: what ``mkdseg sweep`` reads back from each run,
    whatever the logger (W&B keeps its history in a binary run file with no public offline reader)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.history: dict[str, list[float]] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.history.setdefault("step", []).append(trainer.global_step)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                self.history.setdefault(key, []).append(float(value))
        atomic_write_text(self.path, json.dumps(self.history, indent=1))


class SampleImagesCallback(L.Callback):
    """Saves and logs a figure of fixed samples: assistant -> synthetic target -> reconstruction (when the
    method has generators) and target with ground truth and each predictor's segmentation.

    Files: ``<log_dir>/samples/val_step<N>.png`` after validations (every ``every_n_validations``),
    ``<log_dir>/samples/test.png`` after testing.
    """

    def __init__(self, n_samples: int = 3, every_n_validations: int = 1):
        self.n_samples, self.every_n_validations = n_samples, every_n_validations
        self._validations = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_validations == 0:
            self._render(trainer, pl_module, f"val_step{trainer.global_step}", run_dir(trainer), "val")

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        self._render(trainer, pl_module, "test", run_dir(trainer), "test")

    @rank_zero_only
    def _render(self, trainer: L.Trainer, pl_module, name: str, out_dir: Path, stage: str) -> None:
        """Draw the DataModule's samples of ``stage`` (just evaluated) through the method, save and log the figure."""
        dm = trainer.datamodule
        samples = dm.sample_slices(stage, self.n_samples) if hasattr(dm, "sample_slices") else None
        if samples is None or not hasattr(pl_module, "sample_outputs"):
            return

        x_t, y_t, x_a = samples
        outputs = pl_module.sample_outputs(x_t, x_a)
        segmentation = [(x_t[i, 0].numpy(), y_t[i].numpy(), {k: v[i].numpy() for k, v in outputs["segmentation"].items()})
                        for i in range(len(x_t))]
        translation = None
        if "translation" in outputs:
            fake_t, rec_a = outputs["translation"]
            translation = [(x_a[i, 0].numpy(), fake_t[i, 0].numpy(), rec_a[i, 0].numpy()) for i in range(len(x_a))]
        fig = sample_figure(translation, segmentation, pl_module.spec.structures, title=f"{type(pl_module).__name__} — {name}")
        path = out_dir / "samples" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"samples/{stage}", images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"samples/{stage}", fig, global_step=trainer.global_step)
        close_figure(fig)
