"""What every method's segmentors share: construction, option checks, optimizer and schedule.

The methods of the paper's comparison differ in their training step only: the segmentor, its Adam
settings and its step-decay schedule come from here (the translator from :mod:`mkdseg.methods.cyclegan`),
so a difference in results is a difference in method. :class:`SegmentorMethod` is the base of the
single-optimizer methods (automatic optimisation, one Adam over everything); :class:`SegmentorOptions` declares
the options of the segmentors, which every method takes.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.options import check_at_least, check_choice, check_positive
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


LRSchedule = Literal["step", "poly", "cosine"]


def lr_factor(schedule: LRSchedule, step: int, horizon: int) -> float:
    """The segmentor learning rate's multiplier at iteration ``step`` of ``horizon`` for the schedules that are
    functions of the iteration: ``poly`` (nnU-Net's ``(1 - step / horizon) ** 0.9``) and ``cosine`` (half a cosine
    from 1 to 0). Both reach 0 at the horizon; a step past it keeps the last value.

    >>> [round(lr_factor("poly", s, 100), 3) for s in (0, 50, 99)], round(lr_factor("cosine", 50, 100), 3)
    ([1.0, 0.536, 0.016], 0.5)
    """
    t = min(max(step, 0), horizon) / horizon
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"model.seg_lr_schedule {schedule!r} is not a function of the iteration")


def segmentor_scheduler(hp, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR | None:
    """``seg_lr_schedule: step``: the segmentor learning rate x ``seg_lr_decay`` every ``seg_lr_decay_epochs`` epochs
    (MKD's schedule). The per-iteration schedules (``poly``, ``cosine``) need no scheduler object:
    :meth:`SegmentorOptions.on_train_batch_start` sets the rate from ``global_step``."""
    if hp.get("seg_lr_schedule", "step") != "step":
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.seg_lr_decay_epochs, gamma=hp.seg_lr_decay)


def segmentor_schedulers(hp, optimizers) -> list:
    """:func:`segmentor_scheduler` of each of ``optimizers`` (none for the per-iteration schedules)."""
    schedulers = [segmentor_scheduler(hp, opt) for opt in optimizers]
    return [s for s in schedulers if s is not None]


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
        compile: ``torch.compile`` each network that learns (in place: checkpoints keep their keys) when the trainer
            sets the model up. On a CPU it makes the cpu preset's segmentor step 1.3x faster after a few seconds of
            compiling (``benchmarks/run_breakdown.py``); at paper size on a GPU compiling takes minutes.
        seg_lr_schedule: ``step`` (the decay above, the paper's), ``poly`` (nnU-Net's ``(1 - i / N) ** 0.9`` over the
            run's ``trainer.max_steps`` N) or ``cosine`` (from ``lr_seg`` to 0 over N). The last two are functions of
            the iteration, so a resumed run stays exact; a run extended past N needs the same N to repeat.
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
        seg_lr_schedule: LRSchedule = "step",
        compile: bool = False,
        **kwargs,
    ):
        check_positive(lr_seg=lr_seg)
        check_choice("seg_lr_schedule", seg_lr_schedule, LRSchedule)
        if not 0 < seg_lr_decay <= 1:
            raise ValueError(f"model.seg_lr_decay must be in (0, 1], got {seg_lr_decay}")
        check_at_least(1, seg_lr_decay_epochs=seg_lr_decay_epochs)
        super().__init__(**kwargs)
        self._compiled: set[str] = set()
        self._compile_refused = False  # no C++ compiler: said once, then trained uncompiled

    def networks_to_compile(self) -> tuple[str, ...]:
        """Attribute names of the networks ``compile`` compiles: every child module with parameters that learn
        (a mean teacher, which only follows, is left as it is)."""
        return tuple(name for name, module in self.named_children()
                     if any(p.requires_grad for p in module.parameters()))

    def configure_model(self) -> None:
        if not self.hparams.get("compile", False) or self._compile_refused:
            return
        if self.device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            # inductor writes C++ for CPU kernels: without a compiler the first forward would fail mid-run
            rank_zero_warn("model.compile=true: no C++ compiler (c++, g++, clang++) on PATH, which torch.compile "
                           "needs on a CPU; training uncompiled")
            self._compile_refused = True
            return
        for name in self.networks_to_compile():
            if name not in self._compiled:  # the hook runs once per trainer call
                getattr(self, name).compile()
                self._compiled.add(name)

    def segmentor_optimizers(self) -> list:
        """The optimizers whose learning rate is ``lr_seg`` (and follows ``seg_lr_schedule``)."""
        raise NotImplementedError

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # a function of global_step, not a scheduler's own counter: a resumed run stays exact
        schedule = self.hparams.get("seg_lr_schedule", "step")
        if schedule == "step":
            return
        horizon = self.trainer.max_steps
        if horizon is None or horizon < 1:
            raise ValueError(f"model.seg_lr_schedule={schedule} needs trainer.max_steps (the iterations it decays over)")
        rate = self.hparams.lr_seg * lr_factor(schedule, self.global_step, horizon)
        for optimizer in self.segmentor_optimizers():
            for group in optimizer.param_groups:
                group["lr"] = rate


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

    def segmentor_optimizers(self) -> list:
        return [self.optimizers()]

    def configure_optimizers(self):
        # networks that follow others instead of learning (a mean teacher) hold parameters without gradients
        optimizer = segmentor_optimizer(self.hparams, [p for p in self.parameters() if p.requires_grad])
        scheduler = segmentor_scheduler(self.hparams, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
