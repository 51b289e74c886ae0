"""Controls that only the phantom allows: methods given a *perfect* translator.

The phantom can render an assistant subject's own anatomy in the target modality
(``data.assistant_as_target: true`` puts it in each batch as ``x_a_as_t``). Swapping it in for the
learned ``G_at(x_a)`` separates what a method does with synthetic target images from how good the
learned translation is. Not methods for real data: there is no paired rendering of a real scan.
"""

from __future__ import annotations

from mkdseg.methods.supervised import JointTraining
from mkdseg.methods.mkd_no_alignment import MKDNoAlignment


def perfectly_translated(batch: dict, method: str) -> dict:
    """``batch`` with its assistant images replaced by their target-modality renderings."""
    if "x_a_as_t" not in batch:
        raise ValueError(f"{method} needs data.assistant_as_target: true (phantom data only)")
    return {**batch, "x_a": batch["x_a_as_t"]}


class MKDOracleTranslation(MKDNoAlignment):
    """MKD with a perfect image alignment module: S_syn trains on the assistant slices rendered as the
    target modality, with MKD's two distillation terms; the ensemble predicts. Bounds what a better
    ``G_at`` could give MKD."""

    def training_step(self, batch: dict, batch_idx: int) -> None:
        super().training_step(perfectly_translated(batch, type(self).__name__), batch_idx)


class OfflineOracleTranslation(JointTraining):
    """Offline translation (Jiang et al.) with a perfect translator: one segmentor on the assistant
    slices rendered as the target modality plus the real target slices. MKD's control under the
    oracle: the same data without two segmentors or distillation."""

    def losses(self, batch: dict):
        return super().losses(perfectly_translated(batch, type(self).__name__))
