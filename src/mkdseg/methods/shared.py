"""What every method's segmentors share: construction, option checks, optimizer and schedule.

The methods of the paper's comparison differ in their training step only: the segmentor, its Adam
settings and its step-decay schedule come from here (the translator from :mod:`mkdseg.methods.cyclegan`),
so a difference in results is a difference in method. :class:`SegmentorMethod` is the base of the
single-optimizer methods (automatic optimisation, one Adam over everything).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mkdseg.methods.base import SegmentationMethod
from mkdseg.nets import ResidualUNet


def check_segmentor_options(options: dict) -> None:
    """Raise ``ValueError`` naming the option for segmentor settings that cannot train."""
    if options["lr_seg"] <= 0:
        raise ValueError(f"model.lr_seg must be > 0, got {options['lr_seg']}")
    if not 0 < options["seg_lr_decay"] <= 1:
        raise ValueError(f"model.seg_lr_decay must be in (0, 1], got {options['seg_lr_decay']}")
    if options["seg_lr_decay_epochs"] < 1:
        raise ValueError(f"model.seg_lr_decay_epochs must be >= 1, got {options['seg_lr_decay_epochs']}")


def make_segmentor(hp, num_classes: int) -> ResidualUNet:
    """The segmentor every method uses: MKD's S_real/S_syn architecture with the configured sizes."""
    return ResidualUNet(hp.in_channels, num_classes, hp.seg_channels, hp.seg_strides, hp.seg_res_units)


def segment_together(segmentor: nn.Module, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``segmentor(x)`` for each of ``images``, from one forward of their concatenation: the same logits (the
    segmentors normalise per sample), 1.16-1.18x faster than separate forwards on one CPU thread at demo size
    (``benchmarks/step_breakdown.py``). Every method that runs a segmentor on two batches in one phase uses it."""
    logits = segmentor(torch.cat(images))
    return logits.split([x.shape[0] for x in images])


def segmentor_optimizer(hp, params) -> torch.optim.Adam:
    """Adam with the segmentor settings of MKD (lr_seg, seg_betas)."""
    return torch.optim.Adam(params, lr=hp.lr_seg, betas=tuple(hp.seg_betas))


def segmentor_scheduler(hp, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    """Segmentor learning rate x ``seg_lr_decay`` every ``seg_lr_decay_epochs`` epochs (MKD's schedule)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.seg_lr_decay_epochs, gamma=hp.seg_lr_decay)


class SegmentorMethod(SegmentationMethod):
    """A method trained by one optimizer (automatic optimisation): subclasses build their networks in
    ``__init__`` and implement :meth:`losses`; ``loss_seg`` is the one minimised.

    The predictor is named ``seg``. Every loss is logged as ``train/loss_<name>``.
    """

    def __init__(
        self,
        image_size: int = 256,
        data_spec: dict | None = None,
        in_channels: int = 1,
        seg_channels: Sequence[int] = (32, 64, 128, 256, 512),
        seg_strides: Sequence[int] = (2, 2, 2, 2),
        seg_res_units: int = 2,
        lr_seg: float = 2e-4,
        seg_betas: tuple[float, float] = (0.9, 0.999),
        seg_lr_decay: float = 0.9,
        seg_lr_decay_epochs: int = 2,
        eval_batch_size: int = 16,
    ):
        super().__init__(image_size, data_spec, eval_batch_size)
        check_segmentor_options(locals())
        self.save_hyperparameters()

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False, batch_size=batch["x_t"].shape[0])
        return losses["loss_seg"]

    def configure_optimizers(self):
        # networks that follow others instead of learning (a mean teacher) hold parameters without gradients
        optimizer = segmentor_optimizer(self.hparams, [p for p in self.parameters() if p.requires_grad])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": segmentor_scheduler(self.hparams, optimizer), "interval": "epoch"}}
