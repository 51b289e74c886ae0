"""Loss functions against small hand-computed cases."""

import math

import pytest
import torch

from mkdseg.losses import GANLoss, cycle_loss, distillation_loss, supervised_loss


def test_lsgan_is_mean_squared_distance_to_target():
    pred = torch.tensor([[[[0.5, 1.0], [0.0, 2.0]]]])
    assert GANLoss("lsgan")(pred, True).item() == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert GANLoss("lsgan")(pred, False).item() == pytest.approx((0.25 + 1 + 0 + 4) / 4)


def test_vanilla_gan_is_binary_cross_entropy_on_logits():
    pred = torch.tensor([0.0, 2.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    real = -(math.log(sig(0.0)) + math.log(sig(2.0))) / 2
    fake = -(math.log(1 - sig(0.0)) + math.log(1 - sig(2.0))) / 2
    assert GANLoss("vanilla")(pred, True).item() == pytest.approx(real, rel=1e-6)
    assert GANLoss("vanilla")(pred, False).item() == pytest.approx(fake, rel=1e-6)


def test_unknown_gan_mode_lists_choices():
    with pytest.raises(ValueError, match="lsgan"):
        GANLoss("wgan")


def test_cycle_loss_is_mean_absolute_error():
    assert cycle_loss(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 0.0, 0.5])).item() == pytest.approx(2 / 3)


def test_supervised_loss_is_cross_entropy_plus_soft_dice():
    # one image of two pixels, two classes; logits chosen so softmax = [0.75, 0.25] and [0.25, 0.75]
    l = math.log(3.0)
    logits = torch.tensor([[[[l, 0.0]], [[0.0, l]]]])  # [B=1, C=2, H=1, W=2]
    labels = torch.tensor([[[0, 1]]])
    ce = -math.log(0.75)
    # class 0: p = (.75, .25), onehot (1, 0) -> 2*.75 / (1 + 1); class 1 symmetric
    dice = 1 - (2 * 0.75 / 2)
    assert supervised_loss(logits, labels).item() == pytest.approx(ce + dice, abs=1e-4)


def test_perfect_prediction_has_near_zero_supervised_loss():
    labels = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 50
    assert supervised_loss(logits, labels).item() < 1e-4


def test_distillation_is_cross_entropy_of_teacher_and_student():
    teacher = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # softmax (0.25, 0.75)
    student = torch.tensor([[[[0.0]], [[0.0]]]])  # softmax (0.5, 0.5)
    assert distillation_loss(teacher, student).item() == pytest.approx(-math.log(0.5))
    # H(p, p) is the entropy of p
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert distillation_loss(teacher, teacher).item() == pytest.approx(entropy, rel=1e-6)


def test_distillation_gives_the_teacher_no_gradient():
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    distillation_loss(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distillation_temperature_softens_and_rescales():
    teacher, student = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    t = 2.0
    p = (teacher / t).softmax(1)
    expected = -(p * (student / t).log_softmax(1)).sum(1).mean() * t * t
    assert distillation_loss(teacher, student, t).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="kd_temperature"):
        distillation_loss(teacher, student, 0.0)
