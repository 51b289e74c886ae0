"""What every manually optimised method shares: several optimizers stepped by hand, one *phase* at a time.

An iteration is a sequence of phases (MKD: generators, discriminators, segmentors), each one backward
of its loss and a step of its optimizers (:meth:`ManualMethod._step`). ``trainer.global_step`` counts
iterations, not optimizer steps: every step is taken uncounted and the phase that ends the iteration
counts it once (:mod:`mkdseg.lightning_private`), so ``max_steps`` and every step-based interval
count iterations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from mkdseg.lightning_private import count_iteration, uncounted
from mkdseg.methods.amp import PhaseLossScaling
from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.segmentors import segmentor_optimizer


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` take no gradient inside the block (restored afterwards)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class ManualMethod(SegmentationMethod):
    """Base of the methods that step their optimizers by hand (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.loss_scaling = PhaseLossScaling()  # one GradScaler per phase under 16-bit mixed precision

    def setup(self, stage: str) -> None:
        # Lightning's precision plugin would step and update its one scaler at each of the iteration's
        # optimizer steps; the phases take it over (a no-op without 16-bit mixed precision)
        self.loss_scaling.adopt(self.trainer)

    #: the networks' attribute names, one optimizer each, in optimizer order
    network_names: tuple[str, ...] = ()

    def named_optimizers(self) -> dict:
        return dict(zip(self.network_names, self.optimizers()))

    def segmentor_names(self) -> tuple[str, ...]:
        """The segmentors' attribute names (their optimizers follow ``seg_lr_schedule``)."""
        return self.network_names

    def networks_to_compile(self) -> tuple[str, ...]:
        return tuple(self.network_names)

    def make_segmentor_optimizers(self) -> list:
        """The segmentors' optimizers, in :meth:`segmentor_names` order (Adam with ``lr_seg``)."""
        return [segmentor_optimizer(self.hparams, self.network(n).parameters()) for n in self.segmentor_names()]

    def segmentor_optimizers(self) -> list:
        named = self.named_optimizers()
        return [named[n] for n in self.segmentor_names()]

    def _step(self, loss: torch.Tensor, *networks: str, count_last: bool = False) -> None:
        """zero_grad, one backward of ``loss`` and a step of the optimizer of each of ``networks``
        (attribute names of networks with disjoint parameters, e.g. ``"g_at", "g_ta"``).

        One *phase* of the iteration, named ``"g_at+g_ta"``. Under 16-bit mixed precision the phase has a
        loss scale of its own (:class:`~mkdseg.methods.amp.PhaseLossScaling`): an optimizer whose
        gradients overflowed skips its step (counted in ``train/amp_skipped/<phase>``) and the scale is
        updated once per phase. ``count_last``: this phase ends the iteration, which advances
        ``trainer.global_step`` by one.
        """
        named = self.named_optimizers()
        optimizers = [named[n] for n in networks]
        scaling = self.loss_scaling
        phase = "+".join(networks)
        scaler = scaling.scaler(phase)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(scaler.scale(loss))
        for opt in optimizers:
            with uncounted(opt):
                scaler.step(opt)  # unscales; steps only if this optimizer's gradients are finite
        scaling.update(phase)
        if scaling.enabled:
            self.log(f"train/amp_scale/{phase}", scaler.get_scale(), on_step=True, on_epoch=False, batch_size=1)
            self.log(f"train/amp_skipped/{phase}", float(scaling.skipped[phase]), on_step=True, on_epoch=False, batch_size=1)
        if count_last:
            count_iteration(optimizers[-1])
        self.on_phase_end(phase)

    def on_phase_end(self, phase: str) -> None:
        """Called after each phase's optimizer steps (``phase`` e.g. ``"g_at+g_ta"``); override to observe
        the networks between phases (the tests check which networks each phase changed)."""

    def on_train_epoch_end(self) -> None:
        self.step_epoch_schedulers()  # the segmentors' LR decay

    def log_losses(self, losses: dict[str, torch.Tensor], batch: dict) -> None:
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False,
                      batch_size=batch["x_t"].shape[0])
