"""The image alignment module every translation method holds: a CycleGAN (Zhu et al. 2017).

:class:`CycleGANTranslator` is the module: ``g_at`` (assistant -> target), ``g_ta``, ``d_t``, ``d_a``, the
translation, the adversarial and cycle losses and the image pools. :class:`CycleGANMethod` is the base of the
methods that hold one (as ``translator``): the translator's options, its phases (generators, discriminators),
its four optimizers (first in optimizer order) and the pools' checkpoint state. Subclasses add their segmentors
(:meth:`CycleGANMethod.build_segmentors`, :meth:`CycleGANMethod.segmentor_names`) and write ``training_step``
from these pieces: MKD (:mod:`mkdseg.methods.mkd`), Jiang et al. and Zhang et al.
(:mod:`mkdseg.methods.translation`). A change to the alignment module here reaches all of them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mkdseg.losses import GanMode, GANLoss, cycle_loss
from mkdseg.methods.manual import ManualMethod, frozen
from mkdseg.methods.options import check_at_least, check_choice, check_positive
from mkdseg.methods.pool import ImagePool
from mkdseg.methods.segmentors import check_image_size, segmentor_schedulers
from mkdseg.methods.training_state import load_image_pools, save_image_pools
from mkdseg.nets import NLayerDiscriminator, ResnetGenerator, init_weights
from mkdseg.nets.generator import Upsampling
from mkdseg.nets.layers import Norm

GanLrDecay = Literal["constant", "linear"]


def linear_decay_factor(step: int, total: int) -> float:
    """CycleGAN's schedule as a factor of the base rate: 1 for the first half of ``total`` steps, then
    linearly down to 0 at ``total`` (``1 - (step - total/2) / (total/2)``)."""
    half = total / 2
    return max(0.0, min(1.0, 1.0 - (step - half) / half)) if total > 0 else 1.0


class CycleGANTranslator(nn.Module):
    """The CycleGAN: generators ``g_at`` (assistant -> target) and ``g_ta``, PatchGAN discriminators ``d_t`` and
    ``d_a``, their losses and an image pool per discriminator. The options are :class:`CycleGANMethod`'s."""

    #: the networks, in the optimizer order of every method that holds a translator
    NETWORKS = ("g_at", "g_ta", "d_t", "d_a")

    def __init__(self, channels: int, gen_filters: int, gen_blocks: int, gen_downsampling: int, disc_filters: int,
                 disc_layers: int, norm: Norm, gan_mode: GanMode, lambda_cyc: float, pool_size: int,
                 gen_upsampling: Upsampling):
        super().__init__()

        def generator() -> ResnetGenerator:
            return init_weights(ResnetGenerator(channels, channels, gen_filters, gen_blocks, gen_downsampling, norm,
                                                upsampling=gen_upsampling))

        def discriminator() -> NLayerDiscriminator:
            return init_weights(NLayerDiscriminator(channels, disc_filters, disc_layers, norm))

        # construction order = initialisation order of the random weights
        self.g_at = generator()
        self.g_ta = generator()
        self.d_t = discriminator()
        self.d_a = discriminator()
        self.lambda_cyc = lambda_cyc
        self.gan_loss = GANLoss(gan_mode)
        self.pool_t, self.pool_a = ImagePool(pool_size), ImagePool(pool_size)

    @property
    def size_divisor(self) -> int:
        return self.g_at.size_divisor

    def translate(self, x_a: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``fake_t = G_at(x_a)``, ``rec_a = G_ta(fake_t)``, ``fake_a = G_ta(x_t)``, ``rec_t = G_at(fake_a)``."""
        fake_t = self.g_at(x_a)
        rec_a = self.g_ta(fake_t)
        fake_a = self.g_ta(x_t)
        rec_t = self.g_at(fake_a)
        return fake_t, rec_a, fake_a, rec_t

    def generator_losses(self, x_a, x_t, fake_t, rec_a, fake_a, rec_t) -> dict[str, torch.Tensor]:
        """The CycleGAN generator objective ``adv_t + adv_a + lambda_cyc * cyc`` (discriminators frozen by the caller).

        The sum serves both generators: each term depends on one generator only (or both, for the shared
        cycle term), so one backward gives each generator exactly its own objective's gradient.
        """
        loss_adv_t = self.gan_loss(self.d_t(fake_t), True)
        loss_adv_a = self.gan_loss(self.d_a(fake_a), True)
        loss_cyc = cycle_loss(rec_a, x_a) + cycle_loss(rec_t, x_t)
        loss_g = loss_adv_t + loss_adv_a + self.lambda_cyc * loss_cyc
        return {"loss_g": loss_g, "loss_g_adv_t": loss_adv_t, "loss_g_adv_a": loss_adv_a, "loss_cyc": loss_cyc}

    def discriminator_losses(self, x_a, x_t, fake_t, fake_a) -> dict[str, torch.Tensor]:
        """Least-squares (or log) real/fake losses of D_t and D_a on real images vs pooled, detached fakes, each
        halved as in CycleGAN."""
        pooled_t, pooled_a = self.pool_t.query(fake_t.detach()), self.pool_a.query(fake_a.detach())
        loss_d_t = 0.5 * (self.gan_loss(self.d_t(x_t), True) + self.gan_loss(self.d_t(pooled_t), False))
        loss_d_a = 0.5 * (self.gan_loss(self.d_a(x_a), True) + self.gan_loss(self.d_a(pooled_a), False))
        return {"loss_d": loss_d_t + loss_d_a, "loss_d_t": loss_d_t, "loss_d_a": loss_d_a}


class CycleGANMethod(ManualMethod):
    """A segmentation method that holds a CycleGAN translator (:class:`CycleGANTranslator`, ``translator``);
    one optimizer per network, stepped by hand.

    Args:
        gen_filters: the ResNet generators' width (CycleGAN: 64).
        gen_blocks: their residual blocks (CycleGAN: 9 at 256 px).
        gen_downsampling: their stride-2 down-sampling stages (CycleGAN: 2).
        disc_filters: the PatchGAN discriminators' width (70x70 patches: 64).
        disc_layers: their layers (70x70 patches: 3).
        norm: the translator's normalisation (CycleGAN: instance).
        gan_mode: ``lsgan`` (CycleGAN) or ``vanilla`` (the paper's log form).
        lambda_cyc: weight of the cycle-consistency loss (paper: 10).
        pool_size: image pool size per discriminator (CycleGAN: 50).
        lr_gen: the generators' Adam learning rate (paper: 2e-4).
        lr_disc: the discriminators' Adam learning rate (paper: 2e-4).
        gan_betas: the translator's Adam betas (CycleGAN: (0.5, 0.999)).
        gen_upsampling: departure from the paper, off by default: ``transpose`` (CycleGAN) or ``resize``
            (nearest x2 then a 3x3 convolution; see :class:`~mkdseg.nets.ResnetGenerator`).
        gan_lr_decay: departure from the paper, off by default: ``constant`` (the paper's fixed rates) or
            ``linear``: CycleGAN's schedule, the translator's learning rates constant for the first half of
            :meth:`translator_steps`, then linearly to zero at its end.
        **kwargs: the segmentors' options and the others every method takes
            (:class:`~mkdseg.methods.base.SegmentationMethod`).

    ``benchmarks/translation_quality.py`` measures the departures.
    """

    TRANSLATOR = CycleGANTranslator.NETWORKS

    def __init__(
        self,
        gen_filters: int = 64,
        gen_blocks: int = 9,
        gen_downsampling: int = 2,
        disc_filters: int = 64,
        disc_layers: int = 3,
        norm: Norm = "instance",
        gan_mode: GanMode = "lsgan",
        lambda_cyc: float = 10.0,
        pool_size: int = 50,
        lr_gen: float = 2e-4,
        lr_disc: float = 2e-4,
        gan_betas: tuple[float, float] = (0.5, 0.999),
        gen_upsampling: Upsampling = "transpose",
        gan_lr_decay: GanLrDecay = "constant",
        **kwargs,
    ):
        check_choice("gan_lr_decay", gan_lr_decay, GanLrDecay)
        check_positive(lr_gen=lr_gen, lr_disc=lr_disc)
        check_at_least(0, lambda_cyc=lambda_cyc)
        super().__init__(**kwargs)
        # construction order = initialisation order of the random weights: translator, then segmentors
        self.translator = CycleGANTranslator(self.hparams.in_channels, gen_filters, gen_blocks, gen_downsampling,
                                             disc_filters, disc_layers, norm, gan_mode, lambda_cyc, pool_size,
                                             gen_upsampling)
        self.build_segmentors()
        check_image_size(self.hparams.image_size, self.translator.size_divisor,
                         *(self.network(n).size_divisor for n in self.segmentor_names()))

    # -- what subclasses define ----------------------------------------------------------------
    def build_segmentors(self) -> None:
        raise NotImplementedError

    def segmentor_names(self) -> tuple[str, ...]:
        """The segmentors' attribute names, in optimizer order after the translator's four."""
        raise NotImplementedError

    @property
    def network_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.TRANSLATOR + self.segmentor_names()

    def network(self, name: str) -> nn.Module:
        return getattr(self.translator, name) if name in self.TRANSLATOR else getattr(self, name)

    # -- the alignment module ------------------------------------------------------------------
    @staticmethod
    def translator_targets(batch: dict) -> torch.Tensor:
        """The real target images the translator learns the target's appearance from: the unlabelled target
        slices when the data holds them (``data.unlabelled_target``: more subjects, and the translator needs
        no label), else the labelled ones."""
        return batch.get("x_u", batch["x_t"])

    def discriminator_phase(self, x_a, x_t, fake_t, fake_a, count: bool = False) -> dict[str, torch.Tensor]:
        """Update D_t and D_a on real images vs pooled (detached) fakes."""
        disc = self.translator.discriminator_losses(x_a, x_t, fake_t, fake_a)
        self._step(disc["loss_d"], "d_t", "d_a", count_last=count)
        return disc

    def translator_only_step(self, batch: dict) -> None:
        """One plain CycleGAN iteration (generators, then discriminators, which ends the iteration);
        the segmentors are untouched. Jiang et al.'s first stage and MKD's optional warm-up."""
        x_a, x_t = batch["x_a"], self.translator_targets(batch)
        fake_t, rec_a, fake_a, rec_t = self.translator.translate(x_a, x_t)
        with frozen(self.translator.d_t, self.translator.d_a):
            gen = self.translator.generator_losses(x_a, x_t, fake_t, rec_a, fake_a, rec_t)
            self._step(gen["loss_g"], "g_at", "g_ta")
        disc = self.discriminator_phase(x_a, x_t, fake_t, fake_a, count=True)
        self.log_losses({**gen, **disc}, batch)

    def sample_outputs(self, x_t: torch.Tensor, x_a: torch.Tensor) -> dict:
        outputs = super().sample_outputs(x_t, x_a)
        with self.evaluating():
            fake_t = self.translator.g_at(x_a.to(self.device))
            outputs["translation"] = (fake_t.float().cpu(), self.translator.g_ta(fake_t).float().cpu())
        return outputs

    # -- optimisation --------------------------------------------------------------------------
    def segmentors_join_at(self) -> int:
        """The iteration the segmentors start training at (subclasses with a translator-only stage)."""
        return 0

    def on_train_epoch_end(self) -> None:
        if self.global_step > self.segmentors_join_at():  # the segmentors trained during this epoch
            super().on_train_epoch_end()

    def translator_steps(self) -> int:
        """The iterations the translator trains for: the horizon of ``gan_lr_decay``."""
        if self.trainer.max_steps is None or self.trainer.max_steps < 1:
            raise ValueError("model.gan_lr_decay=linear needs trainer.max_steps (the iterations it decays over)")
        return self.trainer.max_steps

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)  # the segmentors' schedule
        # A function of global_step, not a scheduler's own counter: resuming or extending a run stays exact.
        if self.hparams.gan_lr_decay != "linear":
            return
        factor = linear_decay_factor(self.global_step, self.translator_steps())
        named = self.named_optimizers()
        for names, base in ((("g_at", "g_ta"), self.hparams.lr_gen), (("d_t", "d_a"), self.hparams.lr_disc)):
            for name in names:
                for group in named[name].param_groups:
                    group["lr"] = base * factor

    def configure_optimizers(self):
        hp = self.hparams
        rates = {"g_at": hp.lr_gen, "g_ta": hp.lr_gen, "d_t": hp.lr_disc, "d_a": hp.lr_disc}
        translator = [torch.optim.Adam(self.network(n).parameters(), lr=rates[n], betas=tuple(hp.gan_betas))
                      for n in self.TRANSLATOR]
        seg = self.make_segmentor_optimizers()
        return translator + seg, segmentor_schedulers(hp, seg)

    # -- checkpoints: the pools are training state too (one pair per rank under DDP) ----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        save_image_pools(self.translator, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        load_image_pools(self.translator, checkpoint, self.device)
