"""The paper's comparison methods without image translation (Li et al. 2020, Table 1).

Each trains the same segmentor (:class:`mkdseg.nets.ResidualUNet` with MKD's size options and
optimizer settings) with one optimizer; they differ in which labelled slices the segmentor sees:

* :class:`Baseline`: target slices only.
* :class:`FineTune`: assistant slices for ``pretrain_steps`` iterations, then target slices.
* :class:`JointTraining`: one segmentor on both modalities' slices in every batch.

The two-stream network of Valindria et al. is :mod:`mkdseg.methods.xshape`.
"""

from __future__ import annotations

import torch

from mkdseg.losses import supervised_loss
from mkdseg.methods.options import check_at_least
from mkdseg.methods.segmentors import check_image_size, make_segmentor, segment_together
from mkdseg.methods.single_optimizer import SingleOptimizerMethod


class OneSegmentor:
    """One :class:`~mkdseg.nets.ResidualUNet`, ``seg``, that segments target images at test time: a part of the
    single-optimizer methods (listed before :class:`SingleOptimizerMethod` in the bases), built by
    :meth:`build_segmentor` in their ``__init__``."""

    def build_segmentor(self) -> None:
        self.seg = make_segmentor(self.hparams, self.num_classes)
        check_image_size(self.hparams.image_size, self.seg.size_divisor)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.seg(x).float().softmax(1)}


def joint_losses(seg, batch: dict, assistant_weight: float) -> dict[str, torch.Tensor]:
    """Joint training's objective ``assistant_weight * sup(assistant) + sup(target)`` of segmentor ``seg`` on one
    batch, in one forward; with ``assistant_weight`` 0 the assistant slices are not segmented at all."""
    if assistant_weight == 0:
        loss_t = supervised_loss(seg(batch["x_t"]), batch["y_t"])
        return {"loss_seg": loss_t, "loss_seg_t": loss_t}
    logits_a, logits_t = segment_together(seg, batch["x_a"], batch["x_t"])
    loss_a = supervised_loss(logits_a, batch["y_a"])
    loss_t = supervised_loss(logits_t, batch["y_t"])
    return {"loss_seg": assistant_weight * loss_a + loss_t, "loss_seg_a": loss_a, "loss_seg_t": loss_t}


class Baseline(OneSegmentor, SingleOptimizerMethod):
    """The segmentor trained on labelled target slices only; the assistant data is never read.

    Args:
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.base.SegmentationMethod`).

    Example:
        >>> m = Baseline(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.build_segmentor()

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss_seg": supervised_loss(self.seg(batch["x_t"]), batch["y_t"])}


class FineTune(OneSegmentor, SingleOptimizerMethod):
    """Pre-train the segmentor on assistant slices for ``pretrain_steps`` iterations, then train
    (fine-tune) it on target slices; the switch is at ``trainer.global_step == pretrain_steps``.
    Optimizer state and learning-rate schedule run on through the switch.

    Args:
        pretrain_steps: iterations on assistant data before the target data (>= 0).
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.base.SegmentationMethod`).
    """

    def __init__(self, pretrain_steps: int = 20000, **kwargs):
        check_at_least(0, pretrain_steps=pretrain_steps)
        super().__init__(**kwargs)
        self.build_segmentor()

    @property
    def pretraining(self) -> bool:
        return self.global_step < self.hparams.pretrain_steps

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.pretraining:
            loss = supervised_loss(self.seg(batch["x_a"]), batch["y_a"])
            return {"loss_seg": loss, "loss_seg_a": loss}
        loss = supervised_loss(self.seg(batch["x_t"]), batch["y_t"])
        return {"loss_seg": loss, "loss_seg_t": loss}


class JointTraining(OneSegmentor, SingleOptimizerMethod):
    """One segmentor on both modalities: every batch's assistant and target slices, one forward,
    ``loss_seg = assistant_weight * sup(assistant) + sup(target)``.

    Args:
        assistant_weight: weight of the assistant slices' supervised loss (>= 0). 0 never shows the segmentor an
            assistant slice: the ablation "without the assistant" of the methods built on joint training.
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.base.SegmentationMethod`).
    """

    def __init__(self, assistant_weight: float = 1.0, **kwargs):
        check_at_least(0, assistant_weight=assistant_weight)
        super().__init__(**kwargs)
        self.build_segmentor()

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return joint_losses(self.seg, batch, self.hparams.assistant_weight)
