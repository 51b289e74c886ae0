"""Ablations of MKD that need a different network set (the others are configs of :class:`MKDModule`:
``lambda_kd_real: 0`` removes the syn->real distillation, ``lambda_kd_syn: 0`` the real->syn one)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mkdseg.methods.manual import ManualMethod, check_image_size
from mkdseg.methods.mkd import MutualDistillation
from mkdseg.methods.shared import check_segmentor_options, make_segmentor, segmentor_optimizer, segmentor_scheduler


class MKDNoAlignment(MutualDistillation, ManualMethod):
    """MKD without the image alignment module: no generators or discriminators, ``fake_t = x_a``.

    S_syn is trained on the raw assistant images; the two distillation terms are MKD's
    (:func:`mkdseg.methods.mkd.mutual_distillation_losses` with ``fake_t = x_a``): S_syn teaches S_real
    on assistant images, S_real teaches S_syn on target images. One iteration is MKD's segmentor update
    alone; the ensemble of S_syn and S_real segments at test time. The options are MKD's segmentor options.

    Example:
        >>> m = MKDNoAlignment(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> sorted(m.predict_components(torch.zeros(1, 1, 32, 32))), hasattr(m, "g_at")
        (['ens', 'real', 'syn'], False)
    """

    def __init__(
        self,
        image_size: int = 256,
        data_spec: dict | None = None,
        in_channels: int = 1,
        seg_channels: Sequence[int] = (32, 64, 128, 256, 512),
        seg_strides: Sequence[int] = (2, 2, 2, 2),
        seg_res_units: int = 2,
        lambda_kd_real: float = 0.5,
        lambda_kd_syn: float = 1.0,
        kd_temperature: float = 1.0,
        lr_seg: float = 2e-4,
        seg_betas: tuple[float, float] = (0.9, 0.999),
        seg_lr_decay: float = 0.9,
        seg_lr_decay_epochs: int = 2,
        eval_batch_size: int = 16,
    ):
        super().__init__(image_size, data_spec, eval_batch_size)
        check_segmentor_options(locals())
        for name in ("lambda_kd_real", "lambda_kd_syn"):
            if locals()[name] < 0:
                raise ValueError(f"model.{name} must be >= 0, got {locals()[name]}")
        if kd_temperature <= 0:
            raise ValueError(f"model.kd_temperature must be > 0, got {kd_temperature}")
        self.save_hyperparameters()
        self.s_syn = make_segmentor(self.hparams, self.num_classes)
        self.s_real = make_segmentor(self.hparams, self.num_classes)
        check_image_size(image_size, self.s_syn.size_divisor)

    network_names = ("s_syn", "s_real")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        seg = self.segmentor_losses(batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"])  # fake_t = x_a
        self._step(seg["loss_seg"], "s_syn", "s_real", count_last=True)
        self.log_losses(seg, batch)

    def configure_optimizers(self):
        optimizers = [segmentor_optimizer(self.hparams, self.s_syn.parameters()), segmentor_optimizer(self.hparams, self.s_real.parameters())]
        return optimizers, [segmentor_scheduler(self.hparams, opt) for opt in optimizers]
