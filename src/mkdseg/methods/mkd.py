"""The paper's method: online mutual knowledge distillation with an image alignment module.

Li et al., "Towards Cross-modality Medical Image Segmentation with Online Mutual Knowledge
Distillation", AAAI 2020, Algorithm 1: :meth:`MKDModule.training_step` takes its steps in order.
"""

from __future__ import annotations

import torch
from torch import nn

from mkdseg.losses import distillation_loss, supervised_loss
from mkdseg.methods.cyclegan import CycleGANMethod
from mkdseg.methods.manual import frozen
from mkdseg.methods.options import check_at_least, check_positive
from mkdseg.methods.segmentors import make_segmentor, segment_together

OPTIMIZER_ORDER = ("g_at", "g_ta", "d_t", "d_a", "s_syn", "s_real")


def mutual_distillation_losses(s_syn: nn.Module, s_real: nn.Module, fake_t, y_a, x_t, y_t, lambda_kd_real: float,
                               lambda_kd_syn: float, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Step 4 of Algorithm 1, the segmentors' objectives (``fake_t`` detached: no generator update):

    L_seg^real = sup(S_real(x_t), y_t) + lambda_kd_real * H(S_syn(fake_t), S_real(fake_t));
    L_seg^syn = sup(S_syn(fake_t), y_a) + lambda_kd_syn * H(S_real(x_t), S_syn(x_t)); teachers detached.
    """
    logits_syn_fake, logits_syn_t = segment_together(s_syn, fake_t, x_t)
    logits_real_fake, logits_real_t = segment_together(s_real, fake_t, x_t)
    real_sup = supervised_loss(logits_real_t, y_t)
    kd_syn2real = distillation_loss(logits_syn_fake, logits_real_fake, temperature)
    syn_sup = supervised_loss(logits_syn_fake, y_a)
    kd_real2syn = distillation_loss(logits_real_t, logits_syn_t, temperature)
    loss_real = real_sup + lambda_kd_real * kd_syn2real
    loss_syn = syn_sup + lambda_kd_syn * kd_real2syn
    return {
        "loss_seg": loss_real + loss_syn,
        "loss_seg_real": loss_real, "loss_seg_real_sup": real_sup, "loss_kd_syn2real": kd_syn2real,
        "loss_seg_syn": loss_syn, "loss_seg_syn_sup": syn_sup, "loss_kd_real2syn": kd_real2syn,
    }


def ensemble_components(s_syn: nn.Module, s_real: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Step 5: each segmentor's softmax and their mean, the ensemble that segments target images."""
    p_syn = s_syn(x).float().softmax(1)
    p_real = s_real(x).float().softmax(1)
    return {"syn": p_syn, "real": p_real, "ens": (p_syn + p_real) / 2}


class MutualDistillation:
    """S_syn and S_real, their ensemble and their objectives: what MKD and its ablations share
    (a part of :class:`~mkdseg.methods.manual.ManualMethod` subclasses, before them in the bases).

    Args:
        lambda_kd_real: lambda_kd1, weight of the S_syn -> S_real distillation (paper: 0.5).
        lambda_kd_syn: lambda_kd2, weight of the S_real -> S_syn distillation (paper: 1).
        kd_temperature: softening temperature of the distillation (paper: 1, i.e. none).
        **kwargs: the options of the method it is mixed into.
    """

    primary_predictor = "ens"

    def __init__(self, lambda_kd_real: float = 0.5, lambda_kd_syn: float = 1.0, kd_temperature: float = 1.0, **kwargs):
        check_at_least(0, lambda_kd_real=lambda_kd_real, lambda_kd_syn=lambda_kd_syn)
        check_positive(kd_temperature=kd_temperature)
        super().__init__(**kwargs)

    def build_segmentors(self) -> None:
        self.s_syn = make_segmentor(self.hparams, self.num_classes)
        self.s_real = make_segmentor(self.hparams, self.num_classes)

    def segmentor_names(self) -> tuple[str, ...]:
        return ("s_syn", "s_real")

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return ensemble_components(self.s_syn, self.s_real, x)

    def segmentor_losses(self, fake_t, y_a, x_t, y_t) -> dict[str, torch.Tensor]:
        """:func:`mutual_distillation_losses` of S_syn and S_real (``fake_t`` must be detached)."""
        hp = self.hparams
        return mutual_distillation_losses(self.s_syn, self.s_real, fake_t, y_a, x_t, y_t, hp.lambda_kd_real,
                                          hp.lambda_kd_syn, hp.kd_temperature)


def ramped(weight: float, step: int, start: int, length: int) -> float:
    """``weight`` scaled from ``1/length`` at iteration ``start`` up to 1 at ``start + length - 1`` (0 before
    ``start``); ``length`` 0 means no ramp: ``weight`` throughout."""
    if length == 0:
        return weight
    return weight * min(1.0, max(0, step - start + 1) / length)


class MKDModule(MutualDistillation, CycleGANMethod):
    """Six networks: generators ``g_at`` (assistant->target), ``g_ta``; discriminators ``d_t``, ``d_a``;
    segmentors ``s_syn`` (trained on synthetic target images) and ``s_real`` (on real ones).
    At test time the ensemble of ``s_syn`` and ``s_real`` segments target images.

    ``MKDModule()`` builds the paper's settings (256 px, full-size networks). Every size is an argument.

    Args:
        lambda_sup_gen: weight of S_syn's supervised loss in G_at's objective (paper: 1).
        translator_warmup_steps: departure, off (0) in the paper: the first this many iterations are
            plain CycleGAN iterations (no segmentor, no lambda_sup term; cheaper), then Algorithm 1. The
            segmentors' learning-rate decay starts when they join.
        lambda_sup_ramp_steps: departure, off (0): after the warm-up, lambda_sup_gen rises linearly from 0
            over this many iterations, so S_syn's early, untrained gradients do not pull G_at away.
        **kwargs: the distillation's options (:class:`MutualDistillation`), the translator's
            (:class:`~mkdseg.methods.cyclegan.CycleGANMethod`), the segmentors'
            (:class:`~mkdseg.methods.base.SegmentationMethod`) and
            :class:`~mkdseg.methods.base.SegmentationMethod`'s.

    Example:
        >>> m = MKDModule(image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4, seg_channels=(4, 8), seg_strides=(2,))
        >>> m.predict_proba(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 8, 32, 32])
    """

    def __init__(self, lambda_sup_gen: float = 1.0, translator_warmup_steps: int = 0, lambda_sup_ramp_steps: int = 0,
                 **kwargs):
        check_at_least(0, lambda_sup_gen=lambda_sup_gen, translator_warmup_steps=translator_warmup_steps,
                       lambda_sup_ramp_steps=lambda_sup_ramp_steps)
        super().__init__(**kwargs)

    # -- training: Algorithm 1 -----------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.warming_up:  # an option, off in the paper: translator-only iterations first
            self.translator_only_step(batch)
            return
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]
        x_t_real = self.translator_targets(batch)  # x_t, or the unlabelled target slices where the data has them
        # 1. translate both ways
        fake_t, rec_a, fake_a, rec_t = self.translator.translate(x_a, x_t_real)

        # 2. train generators (discriminators and S_syn held fixed)
        with frozen(self.translator.d_t, self.translator.d_a, self.s_syn):
            gen = self.generator_losses(x_a, y_a, x_t_real, fake_t, rec_a, fake_a, rec_t)
            self._step(gen["loss_g"], "g_at", "g_ta")

        # 3. train discriminators on real images vs pooled fakes
        disc = self.discriminator_phase(x_a, x_t_real, fake_t, fake_a)

        # 4. train segmentors with mutual distillation; this step is the one counted in trainer.global_step
        seg = self.segmentor_losses(fake_t.detach(), y_a, x_t, y_t)
        self._step(seg["loss_seg"], "s_syn", "s_real", count_last=True)

        self.log_losses({**gen, **disc, **seg}, batch)

    def generator_losses(self, x_a, y_a, x_t, fake_t, rec_a, fake_a, rec_t) -> dict[str, torch.Tensor]:
        """G_at: adv_t + lambda_cyc * cyc + lambda_sup_gen * CE+Dice(S_syn(fake_t), y_a); G_ta: adv_a + lambda_cyc * cyc
        (:meth:`~mkdseg.methods.cyclegan.CycleGANTranslator.generator_losses` plus S_syn's supervised term; S_syn frozen by the caller)."""
        gen = self.translator.generator_losses(x_a, x_t, fake_t, rec_a, fake_a, rec_t)
        loss_sup = supervised_loss(self.s_syn(fake_t), y_a)
        gen["loss_g"] = gen["loss_g"] + self.sup_gen_weight() * loss_sup
        gen["loss_g_sup_syn"] = loss_sup
        return gen

    # -- the optional warm-up (a departure from the paper; both lengths 0 there) -----------------
    @property
    def warming_up(self) -> bool:
        return self.global_step < self.segmentors_join_at()

    def sup_gen_weight(self) -> float:
        """lambda_sup_gen, ramped in linearly over ``lambda_sup_ramp_steps`` after the warm-up."""
        hp = self.hparams
        return ramped(hp.lambda_sup_gen, self.global_step, hp.translator_warmup_steps, hp.lambda_sup_ramp_steps)

    def segmentors_join_at(self) -> int:
        return self.hparams.translator_warmup_steps
