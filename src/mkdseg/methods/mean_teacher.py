"""Joint training plus a mean teacher on the unlabelled target subjects (Tarvainen & Valpola 2017; the
consistency half of Li et al.'s own follow-up, "Dual-Teacher", MICCAI 2020)."""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F

from mkdseg.data.appearance import random_convolution
from mkdseg.methods.options import check_at_least, check_choice
from mkdseg.methods.single_optimizer import SingleOptimizerMethod
from mkdseg.methods.supervised import OneSegmentor, joint_losses

StudentView = Literal["noise", "gin"]


def sigmoid_rampup(step: int, length: int) -> float:
    """Laine & Aila's ramp ``exp(-5 (1 - t)^2)``, ``t = step / length`` clipped to [0, 1]; 1 when ``length`` is 0."""
    if length == 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher(OneSegmentor, SingleOptimizerMethod):
    """Joint training (one segmentor, both modalities' labelled slices) plus a consistency term on the
    unlabelled target slices (``data.unlabelled_target: true``): the segmentor (student) and an exponential
    moving average of its weights (teacher) see each unlabelled slice with independent Gaussian noise,
    and the student's softmax is pulled to the teacher's (mean squared error over classes and pixels).

    ``loss_seg = sup(assistant) + sup(target) + lambda_consistency * ramp(step) * consistency`` (logged as
    ``loss_unlabelled``). The teacher
    segments at test time (``primary_predictor`` ``teacher``; the student is ``seg``).

    Args:
        assistant_weight: weight of the assistant slices' supervised loss, as in
            :class:`~mkdseg.methods.supervised.JointTraining` (0: the target's labelled slices alone).
        lambda_consistency: weight of the consistency term, reached after ``consistency_rampup_steps``.
        consistency_rampup_steps: iterations of the sigmoid ramp-up of that weight.
        ema_decay: the teacher's weights move to the student's by ``1 - ema_decay`` per iteration.
        input_noise: standard deviation of the Gaussian noise on each view (images are in [-1, 1]).
        student_view: ``noise`` (Tarvainen's: both views differ by their noise only) or ``gin``: the student's
            view is also re-styled by a random network (:func:`~mkdseg.data.appearance.random_convolution`),
            the teacher's is not, so that the segmentor learns to segment target images whatever their
            intensities, from the unlabelled target subjects themselves.
        **kwargs: the segmentors' options (:class:`~mkdseg.methods.base.SegmentationMethod`).

    Example:
        >>> m = MeanTeacher(image_size=32, seg_channels=(4, 8), seg_strides=(2,))
        >>> sorted(m.predict_components(torch.zeros(1, 1, 32, 32)))
        ['seg', 'teacher']
    """

    primary_predictor = "teacher"

    def __init__(self, assistant_weight: float = 1.0, lambda_consistency: float = 1.0, consistency_rampup_steps: int = 200,
                 ema_decay: float = 0.99, input_noise: float = 0.1, student_view: StudentView = "noise", **kwargs):
        check_at_least(0, assistant_weight=assistant_weight, lambda_consistency=lambda_consistency,
                       consistency_rampup_steps=consistency_rampup_steps, input_noise=input_noise)
        check_choice("student_view", student_view, StudentView)
        if not 0 <= ema_decay < 1:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        super().__init__(**kwargs)
        self.build_segmentor()
        self.teacher = copy.deepcopy(self.seg).requires_grad_(False)

    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.seg(x).float().softmax(1), "teacher": self.teacher(x).float().softmax(1)}

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if "x_u" not in batch:
            raise ValueError("MeanTeacher needs unlabelled target slices: set data.unlabelled_target: true "
                             "(and data.n_target below the training fold's subjects)")
        losses = joint_losses(self.seg, batch, self.hparams.assistant_weight)
        unlabelled = self.unlabelled_losses(batch)
        weight = self.hparams.lambda_consistency * sigmoid_rampup(self.global_step, self.hparams.consistency_rampup_steps)
        losses["loss_seg"] = losses["loss_seg"] + weight * unlabelled["loss_unlabelled"]
        return {**losses, **unlabelled}

    def student_view_of(self, x: torch.Tensor) -> torch.Tensor:
        """What the student sees of target images ``x``: re-styled (``student_view: gin``) and noisy."""
        styled = random_convolution(x) if self.hparams.student_view == "gin" else x
        return styled + self.hparams.input_noise * torch.randn_like(x)

    def unlabelled_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The term on the unlabelled target slices (``loss_unlabelled``, weighted and ramped by the caller), and any
        diagnostics to log: here Tarvainen's consistency, the mean squared error between the two softmaxes."""
        x_u = batch["x_u"]
        student = self.seg(self.student_view_of(x_u)).float().softmax(1)
        with torch.no_grad():
            teacher = self.teacher(x_u + self.hparams.input_noise * torch.randn_like(x_u)).float().softmax(1)
        return {"loss_unlabelled": F.mse_loss(student, teacher)}

    def optimizer_step(self, *args, **kwargs) -> None:
        """The teacher follows the student after every optimizer step. Here, not in ``on_train_batch_end``:
        Lightning runs the callbacks' batch-end hooks first, so a checkpoint saved there would hold the
        teacher one update behind and a resumed run would not end as the uninterrupted one."""
        super().optimizer_step(*args, **kwargs)
        decay = self.hparams.ema_decay
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), self.seg.parameters()):
                t.lerp_(s, 1.0 - decay)
