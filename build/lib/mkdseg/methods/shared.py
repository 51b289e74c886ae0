"""What every method's segmentors share: construction, option checks, optimizer and schedule.

The methods of the paper's comparison differ in their training step only: the segmentor, its Adam
settings and its step-decay schedule come from here (the translator from :mod:`mkdseg.methods.cyclegan`),
so a difference in results is a difference in method. :class:`SegmentorMethod` is the base of the
single-optimizer methods (automatic optimisation, one Adam over everything); :class:`SegmentorOptions` declares
the options of the segmentors, which every method takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.options import check_at_least, check_positive
from mkdseg.nets import ResidualUNet


def make_segmentor(hp, num_classes: int, net: Callable[..., nn.Module] = ResidualUNet, **net_options) -> nn.Module:
    """The segmentor every method uses, MKD's S_real/S_syn architecture, with the configured sizes of
    :class:`SegmentorOptions` (``hp``: a method's ``hparams``). ``net``: another architecture of the same
    layout (:class:`~mkdseg.nets.SharedKernelUNet`, :class:`~mkdseg.nets.xshape.XShapeNet`), with
    ``net_options`` of its own."""
    return net(in_channels=hp.in_channels, num_classes=num_classes, channels=hp.seg_channels, strides=hp.seg_strides,
               num_res_units=hp.seg_res_units, **net_options)


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


class SegmentorOptions(SegmentationMethod):
    """The options of the segmentors: their layout (:func:`make_segmentor`), their Adam settings and
    step-decay schedule (:func:`segmentor_optimizer`, :func:`segmentor_scheduler`). The base of
    :class:`SegmentorMethod` (one optimizer) and of :class:`~mkdseg.methods.manual.ManualMethod` (several,
    stepped by hand), so every method takes them.

    Args:
        in_channels: channels of the input slices (and of the translators' images).
        seg_channels: the segmentor's widths, one per level (MONAI UNet's ``channels``).
        seg_strides: its down-sampling strides, one fewer than ``seg_channels``; their product divides ``image_size``.
        seg_res_units: residual units per block.
        lr_seg: the segmentors' Adam learning rate (paper: 2e-4).
        seg_betas: their Adam betas.
        seg_lr_decay: the segmentors' learning rate is multiplied by this, in (0, 1], every
            ``seg_lr_decay_epochs`` epochs (paper: 0.9 every 2 epochs).
        seg_lr_decay_epochs: epochs between two such decays.
        **kwargs: the options of :class:`~mkdseg.methods.base.SegmentationMethod`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: Sequence[int] = (32, 64, 128, 256, 512),
        seg_strides: Sequence[int] = (2, 2, 2, 2),
        seg_res_units: int = 2,
        lr_seg: float = 2e-4,
        seg_betas: tuple[float, float] = (0.9, 0.999),
        seg_lr_decay: float = 0.9,
        seg_lr_decay_epochs: int = 2,
        **kwargs,
    ):
        check_positive(lr_seg=lr_seg)
        if not 0 < seg_lr_decay <= 1:
            raise ValueError(f"model.seg_lr_decay must be in (0, 1], got {seg_lr_decay}")
        check_at_least(1, seg_lr_decay_epochs=seg_lr_decay_epochs)
        super().__init__(**kwargs)


class SegmentorMethod(SegmentorOptions):
    """A method trained by one optimizer (automatic optimisation): subclasses build their networks in
    ``__init__`` and implement :meth:`losses`; ``loss_seg`` is the one minimised.

    The predictor is named ``seg``. Every loss is logged as ``train/loss_<name>``.
    """

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
