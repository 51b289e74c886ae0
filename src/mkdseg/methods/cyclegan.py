"""The image alignment module every translation method builds on: a CycleGAN (Zhu et al. 2017).

:class:`CycleGANMethod` owns ``g_at`` (assistant -> target), ``g_ta``, ``d_t``, ``d_a``: the translation,
the adversarial and cycle losses, the discriminator phase with its image pools, their four optimizers
(first in optimizer order), and the pools' checkpoint state. Subclasses add their segmentors
(:meth:`CycleGANMethod.build_segmentors`, :meth:`CycleGANMethod.segmentor_names`) and write
``training_step`` from these pieces: MKD (:mod:`mkdseg.methods.mkd`), Jiang et al. and Zhang et al.
(:mod:`mkdseg.methods.translation`). A change to the alignment module here reaches all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mkdseg.losses import GANLoss, cycle_loss
from mkdseg.methods.manual import ManualMethod, check_image_size, frozen
from mkdseg.methods.pool import ImagePool
from mkdseg.methods.shared import check_segmentor_options, segmentor_optimizer, segmentor_scheduler
from mkdseg.methods.training_state import load_image_pools, save_image_pools
from mkdseg.nets import NLayerDiscriminator, ResnetGenerator, init_weights


GAN_LR_DECAYS = ("constant", "linear")


def linear_decay_factor(step: int, total: int) -> float:
    """CycleGAN's schedule as a factor of the base rate: 1 for the first half of ``total`` steps, then
    linearly down to 0 at ``total`` (``1 - (step - total/2) / (total/2)``)."""
    half = total / 2
    return max(0.0, min(1.0, 1.0 - (step - half) / half)) if total > 0 else 1.0


class CycleGANMethod(ManualMethod):
    """A segmentation method with a CycleGAN translator; one optimizer per network, stepped by hand.

    Args (the translator's; segmentor sizes and optimisation are every method's):
        gen_filters, gen_blocks, gen_downsampling: ResNet generator (CycleGAN: 64, 9 at 256 px, 2).
        disc_filters, disc_layers: PatchGAN discriminator (70x70: 64, 3). ``norm``: instance or batch.
        gan_mode: ``lsgan`` (CycleGAN) or ``vanilla`` (the log form). lambda_cyc: cycle weight (10).
        pool_size: image pool per discriminator (50). lr_gen, lr_disc, gan_betas: Adam (2e-4, (0.5, 0.999)).
        compile: ``torch.compile`` each network in place when the trainer sets the model up.

    Departures from the paper, off by default (``benchmarks/translation_quality.py`` measures them):
        gen_upsampling: ``transpose`` (CycleGAN) or ``resize`` (nearest x2 then a 3x3 convolution; see
            :class:`~mkdseg.nets.ResnetGenerator`).
        gan_lr_decay: ``constant`` (the paper's fixed 2e-4) or ``linear``: CycleGAN's schedule, the
            translator's learning rates constant for the first half of :meth:`translator_steps`, then
            linearly to zero at its end.
    """

    #: the translator's networks, in optimizer order
    TRANSLATOR = ("g_at", "g_ta", "d_t", "d_a")

    def __init__(
        self,
        image_size: int = 256,
        data_spec: dict | None = None,
        in_channels: int = 1,
        gen_filters: int = 64,
        gen_blocks: int = 9,
        gen_downsampling: int = 2,
        disc_filters: int = 64,
        disc_layers: int = 3,
        norm: str = "instance",
        seg_channels: Sequence[int] = (32, 64, 128, 256, 512),
        seg_strides: Sequence[int] = (2, 2, 2, 2),
        seg_res_units: int = 2,
        gan_mode: str = "lsgan",
        lambda_cyc: float = 10.0,
        pool_size: int = 50,
        lr_gen: float = 2e-4,
        lr_disc: float = 2e-4,
        lr_seg: float = 2e-4,
        gan_betas: tuple[float, float] = (0.5, 0.999),
        seg_betas: tuple[float, float] = (0.9, 0.999),
        seg_lr_decay: float = 0.9,
        seg_lr_decay_epochs: int = 2,
        eval_batch_size: int = 16,
        compile: bool = False,
        gen_upsampling: str = "transpose",
        gan_lr_decay: str = "constant",
    ):
        super().__init__(image_size, data_spec, eval_batch_size)
        if gan_lr_decay not in GAN_LR_DECAYS:
            raise ValueError(f"model.gan_lr_decay must be one of {GAN_LR_DECAYS}, got {gan_lr_decay!r}")
        check_segmentor_options(locals())
        for name in ("lr_gen", "lr_disc"):
            if locals()[name] <= 0:
                raise ValueError(f"model.{name} must be > 0, got {locals()[name]}")
        if lambda_cyc < 0:
            raise ValueError(f"model.lambda_cyc must be >= 0, got {lambda_cyc}")
        self.save_hyperparameters()
        # construction order = initialisation order of the random weights: translator, then segmentors
        self.g_at = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm,
                                                   upsampling=gen_upsampling))
        self.g_ta = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm,
                                                   upsampling=gen_upsampling))
        self.d_t = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.d_a = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.build_segmentors()
        check_image_size(image_size, self.g_at.size_divisor, *(getattr(self, n).size_divisor for n in self.segmentor_names()))
        self.gan_loss = GANLoss(gan_mode)
        self.pool_t, self.pool_a = ImagePool(pool_size), ImagePool(pool_size)
        self.compiled_networks: set[str] = set()

    # -- what subclasses define ----------------------------------------------------------------
    def build_segmentors(self) -> None:
        raise NotImplementedError

    def segmentor_names(self) -> tuple[str, ...]:
        """The segmentors' attribute names, in optimizer order after the translator's four."""
        raise NotImplementedError

    @property
    def network_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.TRANSLATOR + self.segmentor_names()

    def configure_model(self) -> None:
        if self.hparams.get("compile", False):
            for name in self.network_names:
                if name not in self.compiled_networks:  # the hook runs once per trainer call
                    getattr(self, name).compile()
                    self.compiled_networks.add(name)

    # -- the alignment module ------------------------------------------------------------------
    @staticmethod
    def translator_targets(batch: dict) -> torch.Tensor:
        """The real target images the translator learns the target's appearance from: the unlabelled target
        slices when the data holds them (``data.unlabelled_target``: more subjects, and the translator needs
        no label), else the labelled ones."""
        return batch.get("x_u", batch["x_t"])

    def translate(self, x_a: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``fake_t = G_at(x_a)``, ``rec_a = G_ta(fake_t)``, ``fake_a = G_ta(x_t)``, ``rec_t = G_at(fake_a)``."""
        fake_t = self.g_at(x_a)
        rec_a = self.g_ta(fake_t)
        fake_a = self.g_ta(x_t)
        rec_t = self.g_at(fake_a)
        return fake_t, rec_a, fake_a, rec_t

    def cyclegan_losses(self, x_a, x_t, fake_t, rec_a, fake_a, rec_t) -> dict[str, torch.Tensor]:
        """The CycleGAN generator objective ``adv_t + adv_a + lambda_cyc * cyc`` (discriminators frozen by the caller).

        The sum serves both generators: each term depends on one generator only (or both, for the shared
        cycle term), so one backward gives each generator exactly its own objective's gradient.
        """
        loss_adv_t = self.gan_loss(self.d_t(fake_t), True)
        loss_adv_a = self.gan_loss(self.d_a(fake_a), True)
        loss_cyc = cycle_loss(rec_a, x_a) + cycle_loss(rec_t, x_t)
        loss_g = loss_adv_t + loss_adv_a + self.hparams.lambda_cyc * loss_cyc
        return {"loss_g": loss_g, "loss_g_adv_t": loss_adv_t, "loss_g_adv_a": loss_adv_a, "loss_cyc": loss_cyc}

    def discriminator_losses(self, x_a, x_t, pooled_fake_t, pooled_fake_a) -> dict[str, torch.Tensor]:
        """Least-squares (or log) real/fake losses of D_t and D_a, each halved as in CycleGAN."""
        loss_d_t = 0.5 * (self.gan_loss(self.d_t(x_t), True) + self.gan_loss(self.d_t(pooled_fake_t), False))
        loss_d_a = 0.5 * (self.gan_loss(self.d_a(x_a), True) + self.gan_loss(self.d_a(pooled_fake_a), False))
        return {"loss_d": loss_d_t + loss_d_a, "loss_d_t": loss_d_t, "loss_d_a": loss_d_a}

    def discriminator_phase(self, x_a, x_t, fake_t, fake_a, count: bool = False) -> dict[str, torch.Tensor]:
        """Update D_t and D_a on real images vs pooled (detached) fakes."""
        disc = self.discriminator_losses(x_a, x_t, self.pool_t.query(fake_t.detach()), self.pool_a.query(fake_a.detach()))
        self._step(disc["loss_d"], "d_t", "d_a", count_last=count)
        return disc

    def translator_only_step(self, batch: dict) -> None:
        """One plain CycleGAN iteration (generators, then discriminators, which ends the iteration);
        the segmentors are untouched. Jiang et al.'s first stage and MKD's optional warm-up."""
        x_a, x_t = batch["x_a"], self.translator_targets(batch)
        fake_t, rec_a, fake_a, rec_t = self.translate(x_a, x_t)
        with frozen(self.d_t, self.d_a):
            gen = self.cyclegan_losses(x_a, x_t, fake_t, rec_a, fake_a, rec_t)
            self._step(gen["loss_g"], "g_at", "g_ta")
        disc = self.discriminator_phase(x_a, x_t, fake_t, fake_a, count=True)
        self.log_losses({**gen, **disc}, batch)

    def sample_outputs(self, x_t: torch.Tensor, x_a: torch.Tensor) -> dict:
        outputs = super().sample_outputs(x_t, x_a)
        with self.evaluating():
            fake_t = self.g_at(x_a.to(self.device))
            outputs["translation"] = (fake_t.float().cpu(), self.g_ta(fake_t).float().cpu())
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
        adam = torch.optim.Adam
        optimizers = [
            adam(self.g_at.parameters(), lr=hp.lr_gen, betas=tuple(hp.gan_betas)),
            adam(self.g_ta.parameters(), lr=hp.lr_gen, betas=tuple(hp.gan_betas)),
            adam(self.d_t.parameters(), lr=hp.lr_disc, betas=tuple(hp.gan_betas)),
            adam(self.d_a.parameters(), lr=hp.lr_disc, betas=tuple(hp.gan_betas)),
        ]
        seg = [segmentor_optimizer(hp, getattr(self, n).parameters()) for n in self.segmentor_names()]
        return optimizers + seg, [segmentor_scheduler(hp, opt) for opt in seg]

    # -- checkpoints: the pools are training state too (one pair per rank under DDP) ----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        save_image_pools(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        load_image_pools(self, checkpoint)
