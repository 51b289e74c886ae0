"""Comparison methods that translate assistant images into the target modality with a CycleGAN.

* :class:`OfflineTranslation` (Jiang et al. 2018): train the CycleGAN for ``translation_steps``
  iterations, freeze it, then train one segmentor on synthetic-target plus real target slices.
* :class:`OnlineTranslation` (Zhang et al. 2018b): translator and segmentors optimised together, with
  the shape-consistency term; the target segmentor sees synthetic and real target slices.
  With ``target_segmentors: 2``, two independently initialised target segmentors ensembled at test time
  without distillation: the control showing that MKD's gain is not just ensembling.

The CycleGAN (networks, losses, pools, discriminator update, optimizers) is MKD's: :mod:`mkdseg.methods.cyclegan`.
"""

from __future__ import annotations

import torch
from torch import nn

from mkdseg.losses import supervised_loss
from mkdseg.methods.cyclegan import CycleGANMethod
from mkdseg.methods.manual import frozen
from mkdseg.methods.options import check_at_least
from mkdseg.methods.segmentors import make_segmentor, segment_together


class OfflineTranslation(CycleGANMethod):
    """Jiang et al. (2018): two stages, switched by ``trainer.global_step``.

    1. ``global_step < translation_steps``: CycleGAN iterations (G_at, G_ta, then D_t, D_a; the
       segmentor is untouched).
    2. Afterwards: the translator is frozen; each iteration translates the assistant batch with G_at
       (no gradient) and updates the segmentor ``seg`` on
       ``sup(seg(G_at(x_a)), y_a) + sup(seg(x_t), y_t)``. The segmentor's learning-rate decay starts here.

    Args:
        translation_steps: iterations of the first stage (>= 0).
        **kwargs: the translator's and the segmentors' options, MKD's (:class:`~mkdseg.methods.cyclegan.CycleGANMethod`).

    Example:
        >>> m = OfflineTranslation(image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4, seg_channels=(4, 8), seg_strides=(2,))
        >>> sorted(m.predict_components(torch.zeros(1, 1, 32, 32)))
        ['seg']
    """

    def __init__(self, translation_steps: int = 20000, **kwargs):
        check_at_least(0, translation_steps=translation_steps)
        super().__init__(**kwargs)

    def build_segmentors(self) -> None:
        self.seg = make_segmentor(self.hparams, self.num_classes)

    def segmentor_names(self) -> tuple[str, ...]:
        return ("seg",)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.seg(x).float().softmax(1)}

    def translator_steps(self) -> int:
        return self.hparams.translation_steps

    @property
    def translating(self) -> bool:
        return self.global_step < self.segmentors_join_at()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.translating:
            self.translator_only_step(batch)
            return
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]
        with torch.no_grad():
            fake_t = self.translator.g_at(x_a)
        logits_syn, logits_real = segment_together(self.seg, fake_t, x_t)
        loss_syn = supervised_loss(logits_syn, y_a)
        loss_real = supervised_loss(logits_real, y_t)
        loss = loss_syn + loss_real
        self._step(loss, "seg", count_last=True)
        self.log_losses({"loss_seg": loss, "loss_seg_syn": loss_syn, "loss_seg_real": loss_real}, batch)

    def segmentors_join_at(self) -> int:
        return self.hparams.translation_steps


class OnlineTranslation(CycleGANMethod):
    """Zhang et al. (2018b), "Translating and segmenting multimodal medical volumes with cycle- and
    shape-consistency GAN", trained online. One iteration:

    1. ``fake_t = G_at(x_a)``, ``rec_a``, ``fake_a = G_ta(x_t)``, ``rec_t`` (as MKD).
    2. Generators: CycleGAN objective + ``lambda_shape`` x shape consistency
       ``sup(S_t(fake_t), y_a) + sup(S_a(fake_a), y_t)`` with every segmentor held fixed
       (several target segmentors: the mean of their terms).
    3. Discriminators: as MKD.
    4. Segmentors, on detached fakes: each target segmentor ``S_t`` minimises
       ``sup(S_t(x_t), y_t) + sup(S_t(fake_t), y_a)``; the assistant-side segmentor ``S_a`` minimises
       ``sup(S_a(x_a), y_a) + sup(S_a(fake_a), y_t)``.

    ``S_t`` segments target images at test time (predictor ``seg``); ``S_a`` only shapes the translation. With
    several target segmentors ``s_t1``, ``s_t2``, ... (independently initialised and trained, no distillation
    between them), their softmax maps are averaged (predictor ``ens``; ``seg1``, ``seg2``, ... are reported too).

    Args:
        lambda_shape: weight of the shape-consistency term in the generators' objective (Zhang et al.: 1).
        target_segmentors: how many target segmentors (2: the ensemble control of MKD).
        **kwargs: the translator's and the segmentors' options, MKD's (:class:`~mkdseg.methods.cyclegan.CycleGANMethod`).

    Example:
        >>> m = OnlineTranslation(target_segmentors=2, image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4,
        ...                       seg_channels=(4, 8), seg_strides=(2,))
        >>> m.primary_predictor, sorted(m.predict_components(torch.zeros(1, 1, 32, 32)))
        ('ens', ['ens', 'seg1', 'seg2'])
    """

    def __init__(self, lambda_shape: float = 1.0, target_segmentors: int = 1, **kwargs):
        check_at_least(0, lambda_shape=lambda_shape)
        check_at_least(1, target_segmentors=target_segmentors)
        super().__init__(**kwargs)

    @property
    def primary_predictor(self) -> str:  # type: ignore[override]
        return "seg" if self.hparams.target_segmentors == 1 else "ens"

    def build_segmentors(self) -> None:
        self.s_a = make_segmentor(self.hparams, self.num_classes)
        for name in self.target_segmentor_names():
            setattr(self, name, make_segmentor(self.hparams, self.num_classes))  # each independently initialised

    def target_segmentor_names(self) -> tuple[str, ...]:
        if self.hparams.target_segmentors == 1:
            return ("s_t",)
        return tuple(f"s_t{i + 1}" for i in range(self.hparams.target_segmentors))

    def segmentor_names(self) -> tuple[str, ...]:
        return ("s_a",) + self.target_segmentor_names()

    def target_segmentors(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.target_segmentor_names()]

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hparams.target_segmentors == 1:
            return {"seg": self.s_t(x).float().softmax(1)}
        probs = [s(x).float().softmax(1) for s in self.target_segmentors()]
        return {**{f"seg{i + 1}": p for i, p in enumerate(probs)}, "ens": torch.stack(probs).mean(0)}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]
        fake_t, rec_a, fake_a, rec_t = self.translator.translate(x_a, x_t)

        # generators, with discriminators and segmentors held fixed
        with frozen(self.translator.d_t, self.translator.d_a, self.s_a, *self.target_segmentors()):
            gen = self.translator.generator_losses(x_a, x_t, fake_t, rec_a, fake_a, rec_t)
            gen.update(self.shape_losses(fake_t, y_a, fake_a, y_t))
            gen["loss_g"] = gen["loss_g"] + self.hparams.lambda_shape * gen["loss_g_shape"]
            self._step(gen["loss_g"], "g_at", "g_ta")

        disc = self.discriminator_phase(x_a, x_t, fake_t, fake_a)

        seg = self.segmentor_losses(fake_t.detach(), y_a, x_t, y_t, x_a, fake_a.detach())
        self._step(seg["loss_seg"], *self.segmentor_names(), count_last=True)
        self.log_losses({**gen, **disc, **seg}, batch)

    def shape_losses(self, fake_t, y_a, fake_a, y_t) -> dict[str, torch.Tensor]:
        """Shape consistency: synthetic images must keep their source's labels under the segmentors."""
        shape_t = torch.stack([supervised_loss(s(fake_t), y_a) for s in self.target_segmentors()]).mean()
        shape_a = supervised_loss(self.s_a(fake_a), y_t)
        return {"loss_g_shape": shape_t + shape_a, "loss_g_shape_t": shape_t, "loss_g_shape_a": shape_a}

    def segmentor_losses(self, fake_t, y_a, x_t, y_t, x_a, fake_a) -> dict[str, torch.Tensor]:
        """Each segmentor on the real and the synthetic images of its modality (fakes must be detached)."""
        losses: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, s in zip(self.target_segmentor_names(), self.target_segmentors()):
            logits_real, logits_syn = segment_together(s, x_t, fake_t)
            real, syn = supervised_loss(logits_real, y_t), supervised_loss(logits_syn, y_a)
            losses[f"loss_seg_{name}_real"], losses[f"loss_seg_{name}_syn"] = real, syn
            total = total + real + syn
        logits_real_a, logits_syn_a = segment_together(self.s_a, x_a, fake_a)
        real_a, syn_a = supervised_loss(logits_real_a, y_a), supervised_loss(logits_syn_a, y_t)
        losses["loss_seg_s_a_real"], losses["loss_seg_s_a_syn"] = real_a, syn_a
        return {"loss_seg": total + real_a + syn_a, **losses}
