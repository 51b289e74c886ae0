"""What every method's segmentors share: their network, Adam settings and learning-rate schedules.

The methods of the comparison differ in their training step only: the segmentor, its Adam settings and its
schedule come from here (the translator from :mod:`mkdseg.methods.cyclegan`), so a difference in results is a
difference in method. The options themselves are :class:`~mkdseg.methods.base.SegmentationMethod`'s.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from mkdseg.nets import ResidualUNet


def make_segmentor(hp, num_classes: int, net: Callable[..., nn.Module] = ResidualUNet, **net_options) -> nn.Module:
    """The segmentor every method uses, MKD's S_real/S_syn architecture, with the configured sizes of
    :class:`~mkdseg.methods.base.SegmentationMethod` (``hp``: a method's ``hparams``). ``net``: another architecture of the same
    layout (:class:`~mkdseg.nets.SharedKernelUNet`, :class:`~mkdseg.nets.xshape.XShapeNet`), with
    ``net_options`` of its own."""
    return net(in_channels=hp.in_channels, num_classes=num_classes, channels=hp.seg_channels, strides=hp.seg_strides,
               num_res_units=hp.seg_res_units, **net_options)


def segment_together(segmentor: nn.Module, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``segmentor(x)`` for each of ``images``, from one forward of their concatenation: the same logits (the
    segmentors normalise per sample), 1.16-1.18x faster than separate forwards on one CPU thread at demo size
    (``benchmarks/RESULTS.md``, "Cheaper iterations, continued"). Every method that runs a segmentor on two batches in one phase uses it."""
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
    :meth:`~mkdseg.methods.base.SegmentationMethod.on_train_batch_start` sets the rate from ``global_step``."""
    if hp.get("seg_lr_schedule", "step") != "step":
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.seg_lr_decay_epochs, gamma=hp.seg_lr_decay)


def segmentor_schedulers(hp, optimizers) -> list:
    """:func:`segmentor_scheduler` of each of ``optimizers`` (none for the per-iteration schedules)."""
    schedulers = [segmentor_scheduler(hp, opt) for opt in optimizers]
    return [s for s in schedulers if s is not None]


def compile_refusal(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or ``None``: inductor writes C++ for CPU kernels, so
    without a compiler the first forward would fail mid-run."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++, clang++) on PATH, which torch.compile needs on a CPU"
    return None


def check_image_size(image_size: int, *divisors: int) -> None:
    """``ValueError`` naming ``data.image_size`` unless every network (``divisors``) can take it."""
    for d in divisors:
        if image_size < d or image_size % d:
            raise ValueError(
                f"image_size={image_size} cannot be taken by the networks: it must be a multiple of {max(divisors)} "
                "(generator down-sampling and segmentor strides); set data.image_size accordingly"
            )
