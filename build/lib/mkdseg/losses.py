"""Loss functions of the MKD framework (PyTorch and MONAI): nothing here knows about Lightning.

Shapes: logits ``[B, C, H, W]``, integer labels ``[B, H, W]``, images ``[B, 1, H, W]``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

GanMode = Literal["lsgan", "vanilla"]
GAN_MODES = get_args(GanMode)


class GANLoss(nn.Module):
    """Adversarial loss against a constant real (1) or fake (0) target.

    ``lsgan``: mean squared error (CycleGAN's choice); ``vanilla``: binary cross-entropy on logits
    (the log form the paper writes).

    Example:
        >>> GANLoss("lsgan")(torch.zeros(1, 1, 2, 2), target_is_real=True)
        tensor(1.)
    """

    def __init__(self, mode: GanMode = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def cycle_loss(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between an image and its round-trip reconstruction."""
    return F.l1_loss(reconstruction, original)


# MONAI's CE + Dice: Dice of softmax(logits) per image and class, background included, averaged; the same
# smoothing (1e-5 in numerator and denominator) as the loss was written with by hand before.
_DICE_CE = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's segmentation loss: pixel-wise cross-entropy + soft Dice loss, equally weighted."""
    return _DICE_CE(logits.float(), labels[:, None].long())


def distillation_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(p_teacher, p_student) = -sum_c p_c log q_c, averaged over pixels; the teacher gets no gradient.

    With temperature T both distributions are softened by T and the loss is scaled by T^2 (Hinton et al.)
    so that its gradient keeps the same magnitude whatever T; T = 1 is the paper's plain cross-entropy.
    """
    if temperature <= 0:
        raise ValueError(f"kd_temperature must be > 0, got {temperature}")
    teacher = (teacher_logits.detach().float() / temperature).softmax(dim=1)
    # cross-entropy with probability targets: -sum_c p_c log softmax(student)_c, mean over pixels
    return F.cross_entropy(student_logits.float() / temperature, teacher) * temperature**2


def prototype_distillation_loss(logits_a: torch.Tensor, labels_a: torch.Tensor, logits_t: torch.Tensor, labels_t: torch.Tensor,
                                temperature: float = 2.0) -> torch.Tensor:
    """Dou et al. (2020)'s knowledge distillation between two modalities: for each class, the mean logits over
    the batch's pixels of that class in each modality, softened by ``temperature`` into a distribution
    over classes (a class prototype); the loss is the symmetric KL divergence of the two modalities'
    prototypes, averaged over the classes present in both batches (0 if none is). Both sides get gradients.

    >>> logits = torch.randn(2, 3, 4, 4)
    >>> labels = torch.randint(0, 3, (2, 4, 4))
    >>> float(prototype_distillation_loss(logits, labels, logits, labels))
    0.0
    """
    if temperature <= 0:
        raise ValueError(f"proto_temperature must be > 0, got {temperature}")
    num_classes = logits_a.shape[1]

    def prototypes(logits, labels):  # [C classes, C logits], and which classes occur
        onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()  # [B, C, H, W]
        counts = onehot.sum((0, 2, 3))
        sums = torch.einsum("bkhw,bchw->kc", onehot, logits.float())
        return sums / counts.clamp_min(1).unsqueeze(1), counts > 0

    proto_a, present_a = prototypes(logits_a, labels_a)
    proto_t, present_t = prototypes(logits_t, labels_t)
    both = present_a & present_t
    if not both.any():
        return logits_a.sum() * 0.0
    log_p = F.log_softmax(proto_a[both] / temperature, dim=1)
    log_q = F.log_softmax(proto_t[both] / temperature, dim=1)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(1)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(1)
    return ((kl_pq + kl_qp) / 2).mean()
