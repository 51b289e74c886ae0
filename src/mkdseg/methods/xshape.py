"""Valindria et al. (2018)'s X-shape dual-stream network as a method: one stream per modality."""

from __future__ import annotations

import torch

from mkdseg.losses import supervised_loss
from mkdseg.methods.segmentors import check_image_size, make_segmentor
from mkdseg.methods.single_optimizer import SingleOptimizerMethod
from mkdseg.nets.xshape import XShapeNet


class XShape(SingleOptimizerMethod):
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
