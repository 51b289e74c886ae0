"""Ablations of MKD that need a different network set (the others are configs of :class:`MKDModule`:
``lambda_kd_real: 0`` removes the syn->real distillation, ``lambda_kd_syn: 0`` the real->syn one)."""

from __future__ import annotations

import torch  # noqa: F401  (the docstring example uses it)

from mkdseg.methods.manual import ManualMethod
from mkdseg.methods.mkd import MutualDistillation
from mkdseg.methods.segmentors import check_image_size, segmentor_schedulers


class MKDNoAlignment(MutualDistillation, ManualMethod):
    """MKD without the image alignment module: no generators or discriminators, ``fake_t = x_a``.

    S_syn is trained on the raw assistant images; the two distillation terms are MKD's
    (:func:`mkdseg.methods.mkd.mutual_distillation_losses` with ``fake_t = x_a``): S_syn teaches S_real
    on assistant images, S_real teaches S_syn on target images. One iteration is MKD's segmentor update
    alone; the ensemble of S_syn and S_real segments at test time. The options are MKD's without the
    translator's: the distillation's (:class:`~mkdseg.methods.mkd.MutualDistillation`) and the segmentors'.

    Example:
        >>> m = MKDNoAlignment(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> sorted(m.predict_components(torch.zeros(1, 1, 32, 32))), hasattr(m, "g_at")
        (['ens', 'real', 'syn'], False)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.build_segmentors()
        check_image_size(self.hparams.image_size, self.s_syn.size_divisor)

    network_names = ("s_syn", "s_real")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        seg = self.segmentor_losses(batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"])  # fake_t = x_a
        self._step(seg["loss_seg"], "s_syn", "s_real", count_last=True)
        self.log_losses(seg, batch)

    def configure_optimizers(self):
        optimizers = self.make_segmentor_optimizers()
        return optimizers, segmentor_schedulers(self.hparams, optimizers)
