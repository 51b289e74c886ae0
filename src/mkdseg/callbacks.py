"""What is logged besides scalars: the per-structure Dice table and translation/segmentation samples.

Both work with any logger: W&B (``WandbLogger``, also offline) gets tables and images, TensorBoard gets
text and figures, and every logger also gets the files written next to its logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from mkdseg.io import atomic_write_text
from mkdseg.metrics import format_table


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


class MetricHistory(L.Callback):
    """Writes every validation's ``val/*`` metrics to ``path`` as JSON, ``{metric: [value per validation]}``:
    what ``mkdseg sweep`` reads back from each run, whatever the logger (W&B keeps its history in a binary
    run file with no public offline reader)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.history: dict[str, list[float]] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
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
            self._render(trainer, pl_module, f"val_step{trainer.global_step}", run_dir(trainer), "val_records")

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        self._render(trainer, pl_module, "test", run_dir(trainer), "test_records")

    @rank_zero_only
    def _render(self, trainer: L.Trainer, pl_module, name: str, out_dir: Path, records: str) -> None:
        """``records``: the DataModule's validation or test volumes, whichever was just evaluated."""
        dm = trainer.datamodule
        if dm is None or not getattr(dm, records, None):
            return
        from mkdseg.visualize import sample_figure
        import matplotlib.pyplot as plt

        targets = self._target_samples(dm, getattr(dm, records))
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            x_t = torch.stack([t[0] for t in targets]).to(pl_module.device)
            components = pl_module.predict_components(x_t)
            segmentation = [
                (x_t[i, 0].cpu().numpy(), targets[i][1].numpy(), {k: v[i].argmax(0).cpu().numpy() for k, v in components.items()})
                for i in range(len(targets))
            ]
            translation = None
            if hasattr(pl_module, "g_at") and hasattr(pl_module, "g_ta"):
                x_a = torch.stack([dm.assistant_train[i][0] for i in self._spread(len(dm.assistant_train))]).to(pl_module.device)
                fake_t = pl_module.g_at(x_a)
                rec_a = pl_module.g_ta(fake_t)
                translation = [(x_a[i, 0].cpu().numpy(), fake_t[i, 0].float().cpu().numpy(), rec_a[i, 0].float().cpu().numpy()) for i in range(len(x_a))]
        pl_module.train(was_training)
        fig = sample_figure(translation, segmentation, pl_module.spec.structures, title=f"{type(pl_module).__name__} — {name}")
        path = out_dir / "samples" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"samples/{name.split('_')[0]}", images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"samples/{name.split('_')[0]}", fig, global_step=trainer.global_step)
        plt.close(fig)

    def _spread(self, n: int) -> list[int]:
        return np.linspace(0, n - 1, self.n_samples).round().astype(int).tolist()

    def _target_samples(self, dm, records) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Middle slices of the first of ``records`` (labelled target volumes), cycling if there are few."""
        samples = []
        for i in range(self.n_samples):
            record = records[i % len(records)]
            image, label = dm.cache.load(record)
            s = record.n_slices // 2 + (i // len(records)) * 2 - 1
            s = min(max(s, 0), record.n_slices - 1)
            samples.append((torch.from_numpy(np.array(image[s], dtype=np.float32))[None], torch.from_numpy(np.array(label[s], dtype=np.int64))))
        return samples
