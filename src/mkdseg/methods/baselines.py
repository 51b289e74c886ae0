"""The paper's comparison methods without image translation (Li et al. 2020, Table 1).

Each trains the same segmentor (:class:`mkdseg.nets.ResidualUNet` with MKD's size options and
optimizer settings) with one optimizer; they differ in which labelled slices the segmentor sees:

* :class:`Baseline`: target slices only.
* :class:`FineTune`: assistant slices for ``pretrain_steps`` iterations, then target slices.
* :class:`JointTraining`: one segmentor on both modalities' slices in every batch.
* :class:`XShape`: two streams (modality-specific encoders and decoders, shared middle layers);
  the target stream segments at test time (Valindria et al. 2018).
"""

from __future__ import annotations

import torch

from mkdseg.losses import supervised_loss
from mkdseg.methods.manual import check_image_size
from mkdseg.methods.options import check_at_least
from mkdseg.methods.shared import SegmentorMethod, make_segmentor, segment_together
from mkdseg.nets.xshape import XShapeNet


class _OneSegmentor(SegmentorMethod):
    """One :class:`ResidualUNet` ``seg`` that segments target images at test time."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seg = make_segmentor(self.hparams, self.num_classes)
        check_image_size(self.hparams.image_size, self.seg.size_divisor)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.seg(x).float().softmax(1)}


class Baseline(_OneSegmentor):
    """The segmentor trained on labelled target slices only; the assistant data is never read.

    Example:
        >>> m = Baseline(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss_seg": supervised_loss(self.seg(batch["x_t"]), batch["y_t"])}


class FineTune(_OneSegmentor):
    """Pre-train the segmentor on assistant slices for ``pretrain_steps`` iterations, then train
    (fine-tune) it on target slices; the switch is at ``trainer.global_step == pretrain_steps``.
    Optimizer state and learning-rate schedule run on through the switch.

    Args:
        pretrain_steps: iterations on assistant data before the target data (>= 0).
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.shared.SegmentorOptions`).
    """

    def __init__(self, pretrain_steps: int = 20000, **kwargs):
        check_at_least(0, pretrain_steps=pretrain_steps)
        super().__init__(**kwargs)

    @property
    def pretraining(self) -> bool:
        return self.global_step < self.hparams.pretrain_steps

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.pretraining:
            loss = supervised_loss(self.seg(batch["x_a"]), batch["y_a"])
            return {"loss_seg": loss, "loss_seg_a": loss}
        loss = supervised_loss(self.seg(batch["x_t"]), batch["y_t"])
        return {"loss_seg": loss, "loss_seg_t": loss}


class JointTraining(_OneSegmentor):
    """One segmentor on both modalities: every batch's assistant and target slices, one forward,
    ``loss_seg = assistant_weight * sup(assistant) + sup(target)``.

    Args:
        assistant_weight: weight of the assistant slices' supervised loss (>= 0). 0 never shows the segmentor an
            assistant slice: the ablation "without the assistant" of the methods built on joint training.
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.shared.SegmentorOptions`).
    """

    def __init__(self, assistant_weight: float = 1.0, **kwargs):
        check_at_least(0, assistant_weight=assistant_weight)
        super().__init__(**kwargs)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        weight = self.hparams.assistant_weight
        if weight == 0:
            loss_t = supervised_loss(self.seg(batch["x_t"]), batch["y_t"])
            return {"loss_seg": loss_t, "loss_seg_t": loss_t}
        logits_a, logits_t = segment_together(self.seg, batch["x_a"], batch["x_t"])
        loss_a = supervised_loss(logits_a, batch["y_a"])
        loss_t = supervised_loss(logits_t, batch["y_t"])
        return {"loss_seg": weight * loss_a + loss_t, "loss_seg_a": loss_a, "loss_seg_t": loss_t}


class XShape(SegmentorMethod):
    """Valindria et al. (2018)'s X-shape dual-stream network: modality-specific encoders and decoders
    (streams ``a`` and ``t``) around shared middle layers, all widths and strides those of the
    segmentor (``seg_channels``, ``seg_strides``, ``seg_res_units``, which needs ``len(seg_channels) >= 3``).
    ``loss_seg = sup(stream a on assistant) + sup(stream t on target)``; the target stream predicts.

    Example:
        >>> m = XShape(image_size=32, seg_channels=(4, 8, 16), seg_strides=(2, 2))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = make_segmentor(self.hparams, self.num_classes, XShapeNet, streams=("a", "t"))
        check_image_size(self.hparams.image_size, self.net.size_divisor)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.net(x, "t").float().softmax(1)}

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        loss_a = supervised_loss(self.net(batch["x_a"], "a"), batch["y_a"])
        loss_t = supervised_loss(self.net(batch["x_t"], "t"), batch["y_t"])
        return {"loss_seg": loss_a + loss_t, "loss_seg_a": loss_a, "loss_seg_t": loss_t}
