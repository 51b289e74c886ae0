"""The paper's method: online mutual knowledge distillation with an image alignment module.

Li et al., "Towards Cross-modality Medical Image Segmentation with Online Mutual Knowledge
Distillation", AAAI 2020, Algorithm 1. See ``DESIGN.md`` ("The method, precisely").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn

from mkdseg.losses import GANLoss, cycle_loss, distillation_loss, supervised_loss
from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.pool import ImagePool
from mkdseg.methods.training_state import load_image_pools, loss_scaling, phase_name, save_image_pools
from mkdseg.nets import NLayerDiscriminator, ResidualUNet, ResnetGenerator, init_weights

OPTIMIZER_ORDER = ("g_at", "g_ta", "d_t", "d_a", "s_syn", "s_real")


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


@contextmanager
def uncounted(optimizer) -> Iterator[None]:
    """Step ``optimizer`` without advancing ``trainer.global_step``.

    Lightning counts every optimizer step, six per MKD iteration; ``max_steps``, checkpoint intervals
    and step-based schedules must count iterations: every step is taken uncounted and each iteration
    is counted once by :func:`count_iteration`.
    """
    if not isinstance(optimizer, LightningOptimizer):
        yield
        return
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def count_iteration(optimizer) -> None:
    """Advance ``trainer.global_step`` by one, as one counted step of ``optimizer`` would (whether or
    not a mixed-precision overflow made the scaler skip the actual steps)."""
    if isinstance(optimizer, LightningOptimizer):
        optimizer._on_before_step()
        optimizer._on_after_step()


class MKDModule(SegmentationMethod):
    """Six networks: generators ``g_at`` (assistant->target), ``g_ta``; discriminators ``d_t``, ``d_a``;
    segmentors ``s_syn`` (trained on synthetic target images) and ``s_real`` (on real ones).
    At test time the ensemble of ``s_syn`` and ``s_real`` segments target images.

    ``MKDModule()`` builds the paper's settings (256 px, full-size networks). Every size is an argument.

    Args:
        image_size: slice size the networks are trained on (divisible by every network's size divisor).
        lambda_cyc: weight of the cycle-consistency loss (paper: 10).
        lambda_sup_gen: weight of S_syn's supervised loss in G_at's objective (paper: 1).
        lambda_kd_real: lambda_kd1, weight of the S_syn -> S_real distillation (paper: 0.5).
        lambda_kd_syn: lambda_kd2, weight of the S_real -> S_syn distillation (paper: 1).
        kd_temperature: softening temperature of the distillation (paper: 1, i.e. none).
        gan_mode: ``lsgan`` (CycleGAN) or ``vanilla`` (the paper's log form).
        pool_size: image pool size per discriminator (CycleGAN: 50).
        seg_lr_decay, seg_lr_decay_epochs: segmentor learning rate times 0.9 every 2 epochs.
        compile: ``torch.compile`` each network (in place: checkpoints keep their keys) when the trainer
            sets the model up. Pays off on a GPU at paper size; compiling takes minutes.

    Example:
        >>> m = MKDModule(image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4, seg_channels=(4, 8), seg_strides=(2,))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    primary_predictor = "ens"

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
        lambda_sup_gen: float = 1.0,
        lambda_kd_real: float = 0.5,
        lambda_kd_syn: float = 1.0,
        kd_temperature: float = 1.0,
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
    ):
        super().__init__(image_size, data_spec, eval_batch_size)
        _check_options(locals())
        self.save_hyperparameters()
        self.g_at = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm))
        self.g_ta = init_weights(ResnetGenerator(in_channels, in_channels, gen_filters, gen_blocks, gen_downsampling, norm))
        self.d_t = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.d_a = init_weights(NLayerDiscriminator(in_channels, disc_filters, disc_layers, norm))
        self.s_syn = ResidualUNet(in_channels, self.num_classes, seg_channels, seg_strides, seg_res_units)
        self.s_real = ResidualUNet(in_channels, self.num_classes, seg_channels, seg_strides, seg_res_units)
        _check_image_size(image_size, self.g_at.size_divisor, self.s_syn.size_divisor)
        self.gan_loss = GANLoss(gan_mode)
        self.pool_t, self.pool_a = ImagePool(pool_size), ImagePool(pool_size)
        self.automatic_optimization = False
        self.compiled_networks: set[str] = set()

    def configure_model(self) -> None:
        if self.hparams.get("compile", False):
            for name in OPTIMIZER_ORDER:
                network = getattr(self, name, None)
                if network is not None and name not in self.compiled_networks:  # the hook runs once per trainer call
                    network.compile()
                    self.compiled_networks.add(name)

    # -- prediction ----------------------------------------------------------------------------
    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p_syn = self.s_syn(x).float().softmax(1)
        p_real = self.s_real(x).float().softmax(1)
        return {"syn": p_syn, "real": p_real, "ens": (p_syn + p_real) / 2}

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]
        opts = dict(zip(OPTIMIZER_ORDER, self.optimizers()))

        # 1. translate both ways
        fake_t = self.g_at(x_a)
        rec_a = self.g_ta(fake_t)
        fake_a = self.g_ta(x_t)
        rec_t = self.g_at(fake_a)

        # 2. train generators (discriminators and S_syn held fixed)
        with frozen(self.d_t, self.d_a, self.s_syn):
            gen = self.generator_losses(x_a, y_a, x_t, fake_t, rec_a, fake_a, rec_t)
            self._step(gen["loss_g"], opts["g_at"], opts["g_ta"])

        # 3. train discriminators on real images vs pooled fakes
        fake_t, fake_a = fake_t.detach(), fake_a.detach()
        disc = self.discriminator_losses(x_a, x_t, self.pool_t.query(fake_t), self.pool_a.query(fake_a))
        self._step(disc["loss_d"], opts["d_t"], opts["d_a"])

        # 4. train segmentors with mutual distillation; this step is the one counted in trainer.global_step
        seg = self.segmentor_losses(fake_t, y_a, x_t, y_t)
        self._step(seg["loss_seg"], opts["s_syn"], opts["s_real"], count_last=True)

        losses = {**gen, **disc, **seg}
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False, batch_size=x_t.shape[0])

    def generator_losses(self, x_a, y_a, x_t, fake_t, rec_a, fake_a, rec_t) -> dict[str, torch.Tensor]:
        """G_at: adv_t + lambda_cyc * cyc + lambda_sup_gen * CE+Dice(S_syn(fake_t), y_a); G_ta: adv_a + lambda_cyc * cyc.

        The sum serves both generators: each term depends on one generator only (or both, for the
        shared cycle term), so one backward gives each generator exactly its own objective's gradient.
        """
        hp = self.hparams
        loss_adv_t = self.gan_loss(self.d_t(fake_t), True)
        loss_adv_a = self.gan_loss(self.d_a(fake_a), True)
        loss_cyc = cycle_loss(rec_a, x_a) + cycle_loss(rec_t, x_t)
        loss_sup = supervised_loss(self.s_syn(fake_t), y_a)
        loss_g = loss_adv_t + loss_adv_a + hp.lambda_cyc * loss_cyc + hp.lambda_sup_gen * loss_sup
        return {"loss_g": loss_g, "loss_g_adv_t": loss_adv_t, "loss_g_adv_a": loss_adv_a, "loss_cyc": loss_cyc, "loss_g_sup_syn": loss_sup}

    def discriminator_losses(self, x_a, x_t, pooled_fake_t, pooled_fake_a) -> dict[str, torch.Tensor]:
        """Least-squares (or log) real/fake losses of D_t and D_a, each halved as in CycleGAN."""
        loss_d_t = 0.5 * (self.gan_loss(self.d_t(x_t), True) + self.gan_loss(self.d_t(pooled_fake_t), False))
        loss_d_a = 0.5 * (self.gan_loss(self.d_a(x_a), True) + self.gan_loss(self.d_a(pooled_fake_a), False))
        return {"loss_d": loss_d_t + loss_d_a, "loss_d_t": loss_d_t, "loss_d_a": loss_d_a}

    def segmentor_losses(self, fake_t, y_a, x_t, y_t) -> dict[str, torch.Tensor]:
        """L_seg^real = sup(S_real(x_t), y_t) + lambda_kd_real * H(S_syn(fake_t), S_real(fake_t));
        L_seg^syn = sup(S_syn(fake_t), y_a) + lambda_kd_syn * H(S_real(x_t), S_syn(x_t)); teachers detached.

        ``fake_t`` must be detached: the segmentor step does not train the generator.
        """
        hp = self.hparams
        logits_syn_fake = self.s_syn(fake_t)
        logits_real_fake = self.s_real(fake_t)
        logits_real_t = self.s_real(x_t)
        logits_syn_t = self.s_syn(x_t)
        real_sup = supervised_loss(logits_real_t, y_t)
        kd_syn2real = distillation_loss(logits_syn_fake, logits_real_fake, hp.kd_temperature)
        syn_sup = supervised_loss(logits_syn_fake, y_a)
        kd_real2syn = distillation_loss(logits_real_t, logits_syn_t, hp.kd_temperature)
        loss_real = real_sup + hp.lambda_kd_real * kd_syn2real
        loss_syn = syn_sup + hp.lambda_kd_syn * kd_real2syn
        return {
            "loss_seg": loss_real + loss_syn,
            "loss_seg_real": loss_real, "loss_seg_real_sup": real_sup, "loss_kd_syn2real": kd_syn2real,
            "loss_seg_syn": loss_syn, "loss_seg_syn_sup": syn_sup, "loss_kd_real2syn": kd_real2syn,
        }

    def _step(self, loss: torch.Tensor, *optimizers, count_last: bool = False) -> None:
        """zero_grad, one backward of ``loss`` and a step of each optimizer (networks with disjoint parameters).

        One *phase* of the iteration. Under 16-bit mixed precision the phase has a loss scale of its own
        (:class:`~mkdseg.methods.training_state.PhaseLossScaling`): an optimizer whose gradients overflowed
        skips its step (counted in ``train/amp_skipped/<phase>``) and the scale is updated once per phase.
        ``count_last``: this phase ends the iteration, which advances ``trainer.global_step`` by one.
        """
        scaling = loss_scaling(self)
        phase = phase_name(self, optimizers)
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

    def on_train_epoch_end(self) -> None:
        self.step_epoch_schedulers()  # segmentor LR x0.9 every 2 epochs

    def configure_optimizers(self):
        hp = self.hparams
        adam = torch.optim.Adam
        optimizers = [
            adam(self.g_at.parameters(), lr=hp.lr_gen, betas=tuple(hp.gan_betas)),
            adam(self.g_ta.parameters(), lr=hp.lr_gen, betas=tuple(hp.gan_betas)),
            adam(self.d_t.parameters(), lr=hp.lr_disc, betas=tuple(hp.gan_betas)),
            adam(self.d_a.parameters(), lr=hp.lr_disc, betas=tuple(hp.gan_betas)),
            adam(self.s_syn.parameters(), lr=hp.lr_seg, betas=tuple(hp.seg_betas)),
            adam(self.s_real.parameters(), lr=hp.lr_seg, betas=tuple(hp.seg_betas)),
        ]
        schedulers = [
            torch.optim.lr_scheduler.StepLR(opt, step_size=hp.seg_lr_decay_epochs, gamma=hp.seg_lr_decay)
            for opt in optimizers[4:]
        ]
        return optimizers, schedulers

    # -- checkpoints: the pools are training state too (one pair per rank under DDP) ----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        save_image_pools(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        load_image_pools(self, checkpoint)


def _check_options(options: dict) -> None:
    for name in ("lambda_cyc", "lambda_sup_gen", "lambda_kd_real", "lambda_kd_syn"):
        if options[name] < 0:
            raise ValueError(f"model.{name} must be >= 0, got {options[name]}")
    for name in ("kd_temperature", "lr_gen", "lr_disc", "lr_seg"):
        if options[name] <= 0:
            raise ValueError(f"model.{name} must be > 0, got {options[name]}")
    if not 0 < options["seg_lr_decay"] <= 1:
        raise ValueError(f"model.seg_lr_decay must be in (0, 1], got {options['seg_lr_decay']}")
    if options["seg_lr_decay_epochs"] < 1:
        raise ValueError(f"model.seg_lr_decay_epochs must be >= 1, got {options['seg_lr_decay_epochs']}")


def _check_image_size(image_size: int, *divisors: int) -> None:
    for d in divisors:
        if image_size < d or image_size % d:
            raise ValueError(
                f"image_size={image_size} cannot be taken by the networks: it must be a multiple of {max(divisors)} "
                "(generator down-sampling and segmentor strides); set data.image_size accordingly"
            )
