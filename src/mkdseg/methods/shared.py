"""What the comparison methods share: segmentor construction and optimisation, and the CycleGAN.

The methods of the paper's comparison differ in their training step only. Networks, optimizer
settings and the CycleGAN's update come from here (and, where MKD already defines them, from
:mod:`mkdseg.methods.mkd` itself), so a difference in results is a difference in method.

* :class:`SegmentorMethod`: base of the single-optimizer methods (automatic optimisation, one Adam
  over everything, the segmentor's step-decay schedule).
* :class:`TranslationMethod`: base of the methods with a CycleGAN translator (manual optimisation,
  one optimizer per network, stepped by MKD's ``_step``: ``trainer.global_step`` counts iterations).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mkdseg.losses import GANLoss, cycle_loss
from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.mkd import MKDModule, _check_image_size, frozen, uncounted
from mkdseg.methods.pool import ImagePool
from mkdseg.methods.training_state import load_image_pools, save_image_pools
from mkdseg.nets import NLayerDiscriminator, ResidualUNet, ResnetGenerator, init_weights

__all__ = ["SegmentorMethod", "TranslationMethod", "frozen", "segmentor_scheduler", "uncounted"]


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
        optimizer = segmentor_optimizer(self.hparams, self.parameters())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": segmentor_scheduler(self.hparams, optimizer), "interval": "epoch"}}


class TranslationMethod(SegmentationMethod):
    """A method with a CycleGAN translator (``g_at``, ``g_ta``, ``d_t``, ``d_a``) and segmentors;
    manual optimisation with one optimizer per network.

    The CycleGAN is exactly MKD's: same networks, adversarial + cycle losses, image pools, and the
    discriminator update of :meth:`MKDModule.discriminator_losses`. Subclasses build their segmentors,
    list them in :meth:`segmentor_names` (optimizer order after the CycleGAN's four), and write
    ``training_step`` from :meth:`translate`, :meth:`cyclegan_losses`, :meth:`discriminator_losses`
    and :meth:`_step`.
    """

    #: the CycleGAN's networks, in optimizer order
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
    ):
        super().__init__(image_size, data_spec, eval_batch_size)
        check_segmentor_options(locals())
        for name in ("lr_gen", "lr_disc"):
            if locals()[name] <= 0:
                raise ValueError(f"model.{name} must be > 0, got {locals()[name]}")
        if lambda_cyc < 0:
            raise ValueError(f"model.lambda_cyc must be >= 0, got {lambda_cyc}")
        self.save_hyperparameters()
        self.g_at = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm))
        self.g_ta = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm))
        self.d_t = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.d_a = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.gan_loss = GANLoss(gan_mode)
        self.pool_t, self.pool_a = ImagePool(pool_size), ImagePool(pool_size)
        self.automatic_optimization = False
        self.build_segmentors()
        divisors = [self.g_at.size_divisor] + [getattr(self, n).size_divisor for n in self.segmentor_names()]
        _check_image_size(image_size, *divisors)

    # -- what subclasses define ----------------------------------------------------------------
    def build_segmentors(self) -> None:
        raise NotImplementedError

    def segmentor_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    # -- the CycleGAN, as in MKD ---------------------------------------------------------------
    def translate(self, x_a: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``fake_t = G_at(x_a)``, ``rec_a = G_ta(fake_t)``, ``fake_a = G_ta(x_t)``, ``rec_t = G_at(fake_a)``."""
        fake_t = self.g_at(x_a)
        rec_a = self.g_ta(fake_t)
        fake_a = self.g_ta(x_t)
        rec_t = self.g_at(fake_a)
        return fake_t, rec_a, fake_a, rec_t

    def cyclegan_losses(self, x_a, x_t, fake_t, rec_a, fake_a, rec_t) -> dict[str, torch.Tensor]:
        """The CycleGAN generator objective: adv_t + adv_a + lambda_cyc * cyc (discriminators must be frozen)."""
        loss_adv_t = self.gan_loss(self.d_t(fake_t), True)
        loss_adv_a = self.gan_loss(self.d_a(fake_a), True)
        loss_cyc = cycle_loss(rec_a, x_a) + cycle_loss(rec_t, x_t)
        loss_g = loss_adv_t + loss_adv_a + self.hparams.lambda_cyc * loss_cyc
        return {"loss_g": loss_g, "loss_g_adv_t": loss_adv_t, "loss_g_adv_a": loss_adv_a, "loss_cyc": loss_cyc}

    discriminator_losses = MKDModule.discriminator_losses  # the same D_t / D_a update as MKD
    _step = MKDModule._step  # zero_grad, one backward, step each optimizer; only count_last advances global_step

    def discriminator_phase(self, x_a, x_t, fake_t, fake_a, optimizers: dict, count: bool = False) -> dict[str, torch.Tensor]:
        """Update D_t and D_a on real images vs pooled (detached) fakes."""
        disc = self.discriminator_losses(x_a, x_t, self.pool_t.query(fake_t.detach()), self.pool_a.query(fake_a.detach()))
        self._step(disc["loss_d"], optimizers["d_t"], optimizers["d_a"], count_last=count)
        return disc

    def named_optimizers(self) -> dict:
        return dict(zip(self.TRANSLATOR + self.segmentor_names(), self.optimizers()))

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

    def on_train_epoch_end(self) -> None:
        self.step_epoch_schedulers()

    def log_losses(self, losses: dict[str, torch.Tensor], batch: dict) -> None:
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False, batch_size=batch["x_t"].shape[0])

    # -- checkpoints: the pools are training state too (as MKD: one pair per rank under DDP) --
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        save_image_pools(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        load_image_pools(self, checkpoint)
