"""The base of the methods trained by one optimizer: Lightning's automatic optimisation, one Adam over every
network that learns."""

from __future__ import annotations

import torch

from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.segmentors import segmentor_optimizer, segmentor_scheduler


class SingleOptimizerMethod(SegmentationMethod):
    """A method trained by one optimizer: subclasses build their networks in ``__init__`` and implement
    :meth:`losses`; ``loss_seg`` is the one minimised.

    Every loss is logged as ``train/loss_<name>``.
    """

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False,
                      batch_size=batch["x_t"].shape[0])
        return losses["loss_seg"]

    def segmentor_optimizers(self) -> list:
        return [self.optimizers()]

    def configure_optimizers(self):
        # networks that follow others instead of learning (a mean teacher) hold parameters without gradients
        optimizer = segmentor_optimizer(self.hparams, [p for p in self.parameters() if p.requires_grad])
        scheduler = segmentor_scheduler(self.hparams, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
