"""``mkdseg predict`` writes what it predicts: one NIfTI label map per held-out target volume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from mkdseg.inference.writer import write_cached_prediction


class VolumePredictionWriter(BasePredictionWriter):
    """Writes ``<run dir>/predictions/<subject>.nii.gz`` for every volume ``predict_step`` returns: the
    label map in the geometry of the scan the volume was preprocessed from, in the target dataset's
    codes (``codes='index'``: class indices), as ``mkdseg segment`` writes it, post-processed as the
    checkpoint's validation decided (``keep_largest`` of the prediction, :mod:`mkdseg.postprocess`).

    The probabilities are dropped from the returned prediction once written, so a predict run over many
    volumes does not keep them all in memory.
    """

    def __init__(self, codes: str = "dataset"):
        super().__init__(write_interval="batch")
        self.codes = codes
        self.out_dir: Path | None = None
        self.written: list[Path] = []

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage == "predict":
            # trainer.log_dir is a collective under DDP: every rank asks, each writes its own volumes
            self.out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
            self.written = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        path = self.out_dir / f"{prediction['subject']}.nii.gz"
        probabilities = prediction.pop("probabilities")
        write_cached_prediction(probabilities, prediction["record"], pl_module.spec, path, self.codes,
                                keep_largest=prediction.get("keep_largest", ()))
        prediction["path"] = str(path)
        self.written.append(path)

    def on_predict_end(self, trainer: L.Trainer, pl_module) -> None:
        rank_zero_info(f"mkdseg predict: wrote {len(self.written)} label map(s) to {self.out_dir}")
