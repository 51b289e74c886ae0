"""One segmentor for both modalities, kernels shared and normalisation modality-specific, with a prototype
distillation between the modalities (Dou et al., "Unpaired multi-modal segmentation via knowledge
distillation", IEEE TMI 2020): joint training whose segmentor may keep each modality's statistics apart."""

from __future__ import annotations

import torch

from mkdseg.losses import prototype_distillation_loss, supervised_loss
from mkdseg.methods.options import check_at_least, check_positive
from mkdseg.methods.segmentors import check_image_size, make_segmentor
from mkdseg.methods.single_optimizer import SingleOptimizerMethod
from mkdseg.nets.shared_kernel_unet import SharedKernelUNet


class SharedKernelKD(SingleOptimizerMethod):
    """``loss_seg = sup(net(x_a, "a"), y_a) + sup(net(x_t, "t"), y_t) + lambda_proto * prototype KD``; the
    target normalisation segments at test time. Dou et al.'s weights: lambda 0.5, temperature 2.

    Args:
        lambda_proto: weight of :func:`~mkdseg.losses.prototype_distillation_loss` (0: shared kernels alone).
        proto_temperature: its softening temperature.
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.base.SegmentationMethod`).

    Example:
        >>> m = SharedKernelKD(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    def __init__(self, lambda_proto: float = 0.5, proto_temperature: float = 2.0, **kwargs):
        check_at_least(0, lambda_proto=lambda_proto)
        check_positive(proto_temperature=proto_temperature)
        super().__init__(**kwargs)
        self.net = make_segmentor(self.hparams, self.num_classes, SharedKernelUNet)
        check_image_size(self.hparams.image_size, self.net.size_divisor)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.net(x, "t").float().softmax(1)}

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        logits_a, logits_t = self.net(batch["x_a"], "a"), self.net(batch["x_t"], "t")
        loss_a = supervised_loss(logits_a, batch["y_a"])
        loss_t = supervised_loss(logits_t, batch["y_t"])
        kd = prototype_distillation_loss(logits_a, batch["y_a"], logits_t, batch["y_t"], self.hparams.proto_temperature)
        return {"loss_seg": loss_a + loss_t + self.hparams.lambda_proto * kd, "loss_seg_a": loss_a, "loss_seg_t": loss_t,
                "loss_kd_proto": kd}
