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
from mkdseg.methods.mixing import MixShape, box_masks, class_masks, paste
from mkdseg.methods.options import check_at_least, check_choice
from mkdseg.methods.shared import segment_together

PseudoLabeller = Literal["teacher", "student", "rounds"]
MixSource = Literal["unlabelled", "target", "assistant"]

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


class WeakToStrong(MeanTeacher):
    """Joint training plus weak-to-strong pseudo-labelling of the unlabelled target slices
    (``data.unlabelled_target: true``).

    Each iteration, the pseudo-labeller (the EMA teacher, or the segmentor itself without gradient) segments
    each unlabelled slice as it is; pixels whose top class has probability >= ``confidence`` are kept. The
    segmentor then learns those labels (cross-entropy + Dice, unconfident pixels weight 0) on

    * the strong view: the slice mixed with a pasted image (``mix``: a ``cutmix`` box or the ``classmix``
      pixels of half its classes, the pasted image drawn per sample from ``mix_sources``), re-styled and
      noisy as MeanTeacher's student sees it (``student_view``, ``input_noise``);
    * with ``mix_back``, BCP's other direction: a labelled target slice with a box of the unlabelled one
      pasted in (ground truth outside the box, pseudo-label inside);
    * with ``feature_dropout`` > 0, UniMatch's feature-perturbed view: the slice as it is through the
      segmentor with channel dropout on its encoder features.

    With ``pseudo_labeller: rounds`` it is self-training in rounds (noisy student, within one run): the labeller
    is a frozen copy of the teacher taken every ``round_steps`` iterations; the first round trains on the labelled
    slices only.

    ``loss_seg = sup(assistant) + sup(target) + lambda_consistency * ramp(step) * mean(unlabelled terms)``.
    The teacher segments at test time, as in :class:`MeanTeacher`.

    Args:
        confidence: pseudo-labels kept where the labeller's top probability is at least this (FixMatch's 0.95).
        pseudo_labeller: ``teacher`` (the EMA of the segmentor's weights; BCP's), ``student`` (FixMatch's) or
            ``rounds`` (a copy of the teacher frozen for ``round_steps`` iterations: self-training rounds).
        round_steps: iterations per self-training round (``pseudo_labeller: rounds``).
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
        ['loss_u_feature', 'loss_u_strong']
    """

    def __init__(self, confidence: float = 0.95, pseudo_labeller: PseudoLabeller = "teacher", round_steps: int = 500,
                 mix: MixShape = "cutmix", mix_sources: Sequence[MixSource] = ("unlabelled",), mix_back: bool = False,
                 feature_dropout: float = 0.0, **kwargs):
        if not 0 <= confidence <= 1:
            raise ValueError(f"model.confidence must be in [0, 1], got {confidence}")
        if not 0 <= feature_dropout < 1:
            raise ValueError(f"model.feature_dropout must be in [0, 1), got {feature_dropout}")
        check_at_least(1, round_steps=round_steps)
        check_choice("pseudo_labeller", pseudo_labeller, PseudoLabeller)
        check_choice("mix", mix, MixShape)
        for source in mix_sources:
            check_choice("mix_sources", source, MixSource)
        if mix != "none" and not mix_sources:
            raise ValueError(f"model.mix_sources: name at least one source to paste from (mix: {mix})")
        super().__init__(**kwargs)
        if pseudo_labeller == "rounds":
            self.labeller = copy.deepcopy(self.teacher).requires_grad_(False)
            # the round the labeller was copied in: in the checkpoint, so a resumed run keeps its labeller
            self.register_buffer("labeller_round", torch.tensor(0))

    def in_first_round(self) -> bool:
        """Self-training rounds: the labeller is refreshed from the teacher at each round's first iteration;
        the first round has no labeller yet."""
        current = self.global_step // self.hparams.round_steps
        if current != int(self.labeller_round):
            self.labeller.load_state_dict(self.teacher.state_dict())
            self.labeller_round.fill_(current)
        return current == 0

    @torch.no_grad()
    def pseudo_label(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard labels ``[B, H, W]`` of ``x`` and their weights (1 where confident, else 0)."""
        choice = self.hparams.pseudo_labeller
        labeller = self.labeller if choice == "rounds" else self.teacher if choice == "teacher" else self.seg
        confidence, labels = labeller(x).float().softmax(1).max(1)
        return labels, (confidence >= self.hparams.confidence).float()

    def pasted(self, batch: dict, unlabelled: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample, an image from a source of ``mix_sources`` with its label and weights: another
        unlabelled slice of the batch (its pseudo-label) or a labelled one (its ground truth, weight 1)."""
        x_u = unlabelled[0]
        ones = torch.ones_like(unlabelled[2])
        candidates = {
            "unlabelled": tuple(t.roll(1, 0) for t in unlabelled),
            "target": (batch["x_t"], batch["y_t"].long(), ones),
            "assistant": (batch["x_a"], batch["y_a"].long(), ones),
        }
        sources = list(self.hparams.mix_sources)
        choice = torch.randint(len(sources), (x_u.shape[0],), device=x_u.device)
        drawn = candidates[sources[0]]
        for i, name in enumerate(sources[1:], start=1):
            drawn = paste((choice == i)[:, None, None].expand_as(drawn[1]), candidates[name], drawn)
        return drawn

    def unlabelled_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        hp, x_u = self.hparams, batch["x_u"]
        b, _, h, w = x_u.shape
        if hp.pseudo_labeller == "rounds" and self.in_first_round():
            return {"loss_consistency": x_u.new_zeros(())}
        labels, weight = self.pseudo_label(x_u)
        unlabelled = (x_u, labels, weight)
        strong = unlabelled
        if hp.mix != "none":
            source = self.pasted(batch, unlabelled)
            mask = box_masks(b, h, w, x_u.device) if hp.mix == "cutmix" else class_masks(source[1])
            strong = paste(mask, source, unlabelled)
        views, targets = [self.student_view_of(strong[0])], [strong[1:]]
        if hp.mix_back:
            labelled = (batch["x_t"], batch["y_t"].long(), torch.ones_like(weight))
            back = paste(box_masks(b, h, w, x_u.device), unlabelled, labelled)
            views.append(self.student_view_of(back[0]))
            targets.append(back[1:])
        terms = {}
        for name, logits, (y, wt) in zip(("strong", "back"), segment_together(self.seg, *views), targets):
            terms[f"loss_u_{name}"] = weighted_segmentation_loss(logits, y, wt)
        if hp.feature_dropout > 0:
            with feature_dropout(self.seg, hp.feature_dropout):
                terms["loss_u_feature"] = weighted_segmentation_loss(self.seg(x_u), labels, weight)
        return {"loss_consistency": torch.stack(list(terms.values())).mean(), **terms,
                "confident_fraction": weight.mean()}
