"""Weak-to-strong pseudo-labelling on the unlabelled target slices, with mixing across the three sources.

The family of FixMatch (Sohn et al., NeurIPS 2020) and UniMatch (Yang et al., CVPR 2023): a prediction
on the unlabelled slice as it is (the weak view), kept where it is confident, is the hard label of the
same slice strongly perturbed — re-styled (GIN), noisy, mixed with another image — and of a
feature-perturbed view (dropout on the encoder's features). The pasted image may come from any of the
batch's three sources: another unlabelled target slice (CutMix), a labelled target slice (bidirectional
copy-paste, BCP: Bai et al., CVPR 2023) or a labelled, GIN-styled assistant slice (DACS: Tranheden et al.,
WACV 2021); labelled pixels carry their ground truth, unlabelled ones the pseudo-label.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.layers import SkipConnection
from torch import nn

from mkdseg.methods.mean_teacher import MeanTeacher
from mkdseg.methods.mixing import Mixer, MixShape, MixSource
from mkdseg.methods.options import check_at_least, check_choice
from mkdseg.methods.segmentors import segment_together

#: who labels the unlabelled slices: the EMA teacher, the segmentor itself, or a copy of the teacher frozen per round
PseudoLabeller = Literal["teacher", "student", "rounds"]

# Dice of the weighted softmax against the weighted one-hot pseudo-label: UniMatch's masked Dice
_DICE = DiceLoss(include_background=True, softmax=False, to_onehot_y=False, smooth_nr=1e-5, smooth_dr=1e-5)


def weighted_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice (the supervised loss) with per-pixel weights ``[B, H, W]`` (0: ignored):
    the cross-entropy averaged over all pixels, the Dice computed on weighted probabilities and one-hot labels.

    >>> logits = torch.randn(2, 3, 8, 8)
    >>> labels = logits.argmax(1)
    >>> float(weighted_segmentation_loss(logits, labels, torch.zeros(2, 8, 8)))
    0.0
    """
    logits = logits.float()
    ce = (F.cross_entropy(logits, labels, reduction="none") * weight).mean()
    w = weight[:, None]
    if not bool(w.any()):
        return ce  # nothing confident: MONAI's Dice of two empty maps would be 0 anyway, with no gradient
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    return ce + _DICE(logits.softmax(1) * w, onehot * w)


def encoder_blocks(segmentor: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a MONAI ``UNet`` (each level's down block and the bottom), outermost first."""
    level = segmentor.net.model if hasattr(segmentor, "net") else segmentor.model
    blocks = []
    while isinstance(level, nn.Sequential) and len(level) == 3 and isinstance(level[1], SkipConnection):
        blocks.append(level[0])
        level = level[1].submodule
    return [*blocks, level]


@contextmanager
def feature_dropout(segmentor: nn.Module, p: float) -> Iterator[None]:
    """While open, channel dropout with probability ``p`` on every encoder block's output (the features
    the decoder and the deeper levels read): UniMatch's feature perturbation."""
    hooks = [block.register_forward_hook(lambda _m, _i, out: F.dropout2d(out, p, training=True))
             for block in encoder_blocks(segmentor)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


class FrozenRounds(nn.Module):
    """The labeller of self-training in rounds: a copy of the teacher, frozen for ``round_steps`` iterations and
    refreshed at each round's first iteration; the round it was copied in is a buffer, so a resumed run keeps it."""

    def __init__(self, teacher: nn.Module, round_steps: int):
        super().__init__()
        self.net = copy.deepcopy(teacher).requires_grad_(False)
        self.round_steps = round_steps
        self.register_buffer("current_round", torch.tensor(0))

    def follow(self, teacher: nn.Module, step: int) -> bool:
        """Refresh the copy when ``step`` starts a new round; whether ``step`` is in the first round (no labeller yet)."""
        current = step // self.round_steps
        if current != int(self.current_round):
            self.net.load_state_dict(teacher.state_dict())
            self.current_round.fill_(current)
        return current == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WeakToStrong(MeanTeacher):
    """Joint training plus weak-to-strong pseudo-labelling of the unlabelled target slices
    (``data.unlabelled_target: true``), composed of three named parts: who labels (``pseudo_labeller``), how the
    strong view is mixed (``mix``, ``mix_sources``, ``mix_back``: a :class:`~mkdseg.methods.mixing.Mixer`) and what
    the student sees (``student_view``, ``input_noise``: :class:`MeanTeacher`'s), with UniMatch's feature-perturbed
    view beside them (``feature_dropout``).

    Each iteration, the pseudo-labeller segments each unlabelled slice as it is; pixels whose top class has
    probability >= ``confidence`` are kept. The segmentor then learns those labels (cross-entropy + Dice,
    unconfident pixels weight 0) on

    * the strong view: the slice mixed with a pasted image (a ``cutmix`` box or the ``classmix`` pixels of half its
      classes, the pasted image drawn per sample from ``mix_sources``), re-styled and noisy as the student sees it;
    * with ``mix_back``, BCP's other direction: a labelled target slice with a box of the unlabelled one pasted in
      (ground truth outside the box, pseudo-label inside);
    * with ``feature_dropout`` > 0, UniMatch's feature-perturbed view: the slice as it is through the segmentor
      with channel dropout on its encoder features.

    ``pseudo_labeller: rounds`` is self-training in rounds (noisy student, within one run): the labeller is a
    frozen copy of the teacher (:class:`FrozenRounds`) taken every ``round_steps`` iterations; the first round
    trains on the labelled slices only.

    ``loss_seg = sup(assistant) + sup(target) + lambda_consistency * ramp(step) * mean(unlabelled terms)``, the
    mean logged as ``loss_unlabelled``. The teacher segments at test time, as in :class:`MeanTeacher`.

    Args:
        confidence: pseudo-labels kept where the labeller's top probability is at least this (FixMatch's 0.95).
        pseudo_labeller: ``teacher`` (the EMA of the segmentor's weights; BCP's), ``student`` (FixMatch's) or
            ``rounds`` (a copy of the teacher frozen for ``round_steps`` iterations: self-training rounds).
        round_steps: iterations per self-training round; given with ``pseudo_labeller: rounds`` only.
        mix: ``none``, ``cutmix`` (a random box) or ``classmix`` (the pixels of half of the pasted image's classes).
        mix_sources: where the pasted image comes from, drawn per sample: ``unlabelled`` (another unlabelled
            target slice), ``target`` (a labelled target slice), ``assistant`` (a labelled assistant slice).
        mix_back: also paste a box of each unlabelled slice into a labelled target slice (BCP).
        feature_dropout: channel dropout probability of the feature-perturbed view (0: no such view).
        **kwargs: :class:`MeanTeacher`'s options (weight, ramp, EMA decay, the student's view) and the
            segmentor's.

    Example:
        >>> m = WeakToStrong(image_size=32, seg_channels=(4, 8), seg_strides=(2,), feature_dropout=0.5)
        >>> batch = {"x_a": torch.zeros(2, 1, 32, 32), "y_a": torch.zeros(2, 32, 32).long(),
        ...          "x_t": torch.zeros(2, 1, 32, 32), "y_t": torch.zeros(2, 32, 32).long(), "x_u": torch.zeros(2, 1, 32, 32)}
        >>> sorted(k for k in m.losses(batch) if k.startswith("loss_u"))
        ['loss_u_feature', 'loss_u_strong', 'loss_unlabelled']
    """

    def __init__(self, confidence: float = 0.95, pseudo_labeller: PseudoLabeller = "teacher", round_steps: int | None = None,
                 mix: MixShape = "cutmix", mix_sources: Sequence[MixSource] = ("unlabelled",), mix_back: bool = False,
                 feature_dropout: float = 0.0, **kwargs):
        if not 0 <= confidence <= 1:
            raise ValueError(f"model.confidence must be in [0, 1], got {confidence}")
        if not 0 <= feature_dropout < 1:
            raise ValueError(f"model.feature_dropout must be in [0, 1), got {feature_dropout}")
        check_choice("pseudo_labeller", pseudo_labeller, PseudoLabeller)
        if (pseudo_labeller == "rounds") != (round_steps is not None):
            raise ValueError("model.round_steps: the iterations of a self-training round, given with "
                             f"pseudo_labeller: rounds and only then (pseudo_labeller: {pseudo_labeller}, round_steps: {round_steps})")
        if round_steps is not None:
            check_at_least(1, round_steps=round_steps)
        check_choice("mix", mix, MixShape)
        for source in mix_sources:
            check_choice("mix_sources", source, MixSource)
        if mix != "none" and not mix_sources:
            raise ValueError(f"model.mix_sources: name at least one source to paste from (mix: {mix})")
        super().__init__(**kwargs)
        self.mixer = Mixer(mix, tuple(mix_sources), mix_back)
        if round_steps is not None:
            self.labeller = FrozenRounds(self.teacher, round_steps)

    def labeller_network(self) -> nn.Module:
        """The network whose confident predictions are the pseudo-labels (``pseudo_labeller``)."""
        choice = self.hparams.pseudo_labeller
        return self.labeller if choice == "rounds" else self.teacher if choice == "teacher" else self.seg

    @torch.no_grad()
    def pseudo_label(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard labels ``[B, H, W]`` of ``x`` and their weights (1 where confident, else 0)."""
        confidence, labels = self.labeller_network()(x).float().softmax(1).max(1)
        return labels, (confidence >= self.hparams.confidence).float()

    def unlabelled_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        x_u = batch["x_u"]
        if self.hparams.pseudo_labeller == "rounds" and self.labeller.follow(self.teacher, self.global_step):
            return {"loss_unlabelled": x_u.new_zeros(())}
        labels, weight = self.pseudo_label(x_u)
        views = self.mixer.views(batch, (x_u, labels, weight), self.student_view_of)
        logits = segment_together(self.seg, *(image for image, _, _ in views.values()))
        terms = {f"loss_u_{name}": weighted_segmentation_loss(view_logits, y, wt)
                 for (name, (_, y, wt)), view_logits in zip(views.items(), logits)}
        if self.hparams.feature_dropout > 0:
            with feature_dropout(self.seg, self.hparams.feature_dropout):
                terms["loss_u_feature"] = weighted_segmentation_loss(self.seg(x_u), labels, weight)
        return {"loss_unlabelled": torch.stack(list(terms.values())).mean(), **terms,
                "confident_fraction": weight.mean()}
