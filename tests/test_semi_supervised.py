"""Weak-to-strong pseudo-labelling of the unlabelled target slices (FixMatch / UniMatch), and mixing across the
three sources (CutMix, BCP's copy-paste, DACS's class mix): masks, losses, pseudo-labels, training, resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mkdseg.losses import supervised_loss
from mkdseg.methods import WeakToStrong
from mkdseg.methods.mixing import BOX_AREA, box_masks, class_masks, paste
from mkdseg.methods.pseudo_label import encoder_blocks, feature_dropout, weighted_segmentation_loss

from conftest import TINY_MODEL, make_datamodule, quiet_trainer

SEGMENTOR = {k: TINY_MODEL[k] for k in ("image_size", "seg_channels", "seg_strides", "seg_res_units", "eval_batch_size")}
SIZE = SEGMENTOR["image_size"]


def batch_of(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = lambda: torch.rand(b, 1, SIZE, SIZE, generator=g) * 2 - 1  # noqa: E731
    label = lambda: torch.randint(0, 3, (b, SIZE, SIZE), generator=g)  # noqa: E731
    return {"x_a": image(), "y_a": label(), "x_t": image(), "y_t": label(), "x_u": image()}


# -- masks --------------------------------------------------------------------------------------------
def test_box_masks_are_one_rectangle_of_the_drawn_area_per_sample():
    torch.manual_seed(0)
    masks = box_masks(64, 40, 40)
    for m in masks:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(m.sum()) == h * w  # a filled rectangle
        assert BOX_AREA[0] * 1600 * 0.5 <= h * w <= BOX_AREA[1] * 1600 * 1.5  # rounding of the sides
    torch.manual_seed(0)
    assert torch.equal(box_masks(64, 40, 40), masks)  # drawn from torch's global stream: a resume redraws them


def test_class_masks_paste_whole_classes_half_of_those_present_never_background():
    torch.manual_seed(0)
    labels = torch.zeros(50, 8, 8, dtype=torch.long)
    labels[:, :2, :] = 1
    labels[:, 2:4, :] = 2
    labels[:, 4:6, :] = 3
    labels[:, 6, :] = 4
    masks = class_masks(labels)
    for y, m in zip(labels, masks):
        chosen = set(y[m].tolist())
        assert 0 not in chosen and len(chosen) == 2  # half of 4 present classes
        assert all(bool(m[y == c].all()) for c in chosen)  # a class is pasted whole
    assert len({tuple(sorted(set(y[m].tolist()))) for y, m in zip(labels, masks)}) > 1  # random choice
    assert not class_masks(torch.zeros(2, 4, 4, dtype=torch.long)).any()  # no foreground: nothing pasted


def test_paste_takes_image_label_and_weight_from_the_same_pixels():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    a = (torch.ones(1, 1, 4, 4), torch.full((1, 4, 4), 2), torch.ones(1, 4, 4))
    b = (torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4))
    image, label, weight = paste(mask, a, b)
    assert torch.equal(image[:, 0] == 1, mask) and torch.equal(label == 2, mask) and torch.equal(weight == 1, mask)


# -- losses and pseudo-labels ---------------------------------------------------------------------------
def test_weighted_loss_is_the_supervised_loss_at_weight_one_and_ignores_weight_zero():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    assert torch.allclose(weighted_segmentation_loss(logits, labels, torch.ones(2, 16, 16)), supervised_loss(logits, labels), atol=1e-5)
    half = torch.zeros(2, 16, 16)
    half[:, :8] = 1
    other = labels.clone()
    other[:, 8:] = (labels[:, 8:] + 1) % 3  # labels changed only where the weight is 0
    assert torch.allclose(weighted_segmentation_loss(logits, labels, half), weighted_segmentation_loss(logits, other, half))
    assert not torch.allclose(weighted_segmentation_loss(logits, labels, torch.ones(2, 16, 16)),
                              weighted_segmentation_loss(logits, other, torch.ones(2, 16, 16)))


def test_pseudo_labels_keep_the_confident_pixels_of_the_chosen_labeller():
    model = WeakToStrong(confidence=0.0, **SEGMENTOR)
    x = batch_of()["x_u"]
    labels, weight = model.pseudo_label(x)
    with torch.no_grad():
        assert torch.equal(labels, model.teacher(x).argmax(1))
    assert bool((weight == 1).all())
    _, none = WeakToStrong(confidence=1.0, **SEGMENTOR).pseudo_label(x)
    assert float(none.mean()) < 0.01  # an untrained net is never certain
    student = WeakToStrong(pseudo_labeller="student", confidence=0.0, **SEGMENTOR)
    with torch.no_grad():
        student.seg.net.model[0].conv.unit0.conv.weight.add_(1.0)  # student and teacher now differ
        assert torch.equal(student.pseudo_label(x)[0], student.seg(x).argmax(1))
        assert not torch.equal(student.seg(x).argmax(1), student.teacher(x).argmax(1))


@pytest.mark.parametrize("source", ["target", "assistant"])
def test_pasted_labelled_pixels_carry_their_ground_truth_with_full_weight(source, monkeypatch):
    """DACS (assistant) and BCP (target): where a labelled slice is pasted, the label is its ground truth."""
    import mkdseg.methods.pseudo_label as pl

    seen = []
    monkeypatch.setattr(pl, "weighted_segmentation_loss", lambda logits, y, w: seen.append((y, w)) or logits.sum() * 0)
    model = WeakToStrong(confidence=1.0, mix="classmix", mix_sources=[source], student_view="noise", **SEGMENTOR)
    batch = batch_of()
    truth = batch[f"y_{source[0]}"]
    model.unlabelled_losses(batch)
    (y, w), = seen
    pasted = w == 1  # an untrained labeller is never certain (confidence 1): weight 1 marks ground truth
    assert pasted.any() and float(w[~pasted].max()) == 0.0
    assert torch.equal(y[pasted], truth[pasted])
    for i in range(truth.shape[0]):  # whole classes of the pasted slice, never its background
        classes = set(truth[i][pasted[i]].tolist())
        assert 0 not in classes and all(bool(pasted[i][truth[i] == c].all()) for c in classes)


def test_mixing_from_several_sources_draws_one_source_per_sample():
    model = WeakToStrong(mix_sources=["target", "assistant"], **SEGMENTOR)
    batch = batch_of(b=16)
    unlabelled = (batch["x_u"], torch.zeros(16, SIZE, SIZE, dtype=torch.long), torch.zeros(16, SIZE, SIZE))
    torch.manual_seed(0)
    image, label, weight = model.mixer.pasted(batch, unlabelled)
    from_target = [torch.equal(image[i], batch["x_t"][i]) and torch.equal(label[i], batch["y_t"][i]) for i in range(16)]
    from_assistant = [torch.equal(image[i], batch["x_a"][i]) and torch.equal(label[i], batch["y_a"][i]) for i in range(16)]
    assert all(t != a for t, a in zip(from_target, from_assistant))  # each sample from exactly one source
    assert 0 < sum(from_target) < 16 and bool((weight == 1).all())


def test_feature_dropout_perturbs_the_encoder_while_open_only():
    model = WeakToStrong(**SEGMENTOR)
    assert len(encoder_blocks(model.seg)) == len(SEGMENTOR["seg_channels"])
    x = batch_of()["x_u"]
    with torch.no_grad():
        plain = model.seg(x)
        with feature_dropout(model.seg, 0.5):
            perturbed = model.seg(x)
        assert not torch.allclose(plain, perturbed)
        assert torch.equal(model.seg(x), plain)  # hooks removed


def test_every_view_is_a_loss_term_and_options_are_checked():
    model = WeakToStrong(mix_back=True, feature_dropout=0.5, **SEGMENTOR)
    losses = model.losses(batch_of())
    assert {"loss_u_strong", "loss_u_back", "loss_u_feature", "confident_fraction"} <= set(losses)
    terms = torch.stack([losses[k] for k in ("loss_u_strong", "loss_u_back", "loss_u_feature")])
    assert torch.allclose(losses["loss_unlabelled"], terms.mean())
    for bad, option in (({"confidence": 1.5}, "model.confidence"), ({"feature_dropout": 1.0}, "model.feature_dropout"),
                        ({"mix_sources": []}, "model.mix_sources")):
        with pytest.raises(ValueError, match=option):
            WeakToStrong(**bad, **SEGMENTOR)


# -- training --------------------------------------------------------------------------------------------
def every_option(labeller: str = "teacher") -> WeakToStrong:
    L.seed_everything(0)
    return WeakToStrong(confidence=0.5, mix="cutmix", mix_sources=["unlabelled", "target", "assistant"], mix_back=True,
                        feature_dropout=0.5, consistency_rampup_steps=0, pseudo_labeller=labeller,
                        round_steps=2 if labeller == "rounds" else None, **SEGMENTOR)


def fit(phantom_root, max_steps: int, labeller: str = "teacher", ckpt_path: str | None = None, **trainer_options) -> WeakToStrong:
    model = every_option(labeller)
    # GIN on every training image too: the resumed run must restyle its batches as the straight run did
    dm = make_datamodule(phantom_root, n_val=0, n_target=1, unlabelled_target=True, batch_size=2, samples_per_epoch=6,
                         appearance="gin", appearance_on="both")
    quiet_trainer(max_steps=max_steps, deterministic=True, **trainer_options).fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("labeller", ["teacher", "rounds"])
def test_weak_to_strong_trains_and_resumes_exactly(phantom_root, tmp_path, labeller):
    """4 iterations straight == 2 + resume to 4, every network bit for bit (the masks, the student's styles and the
    data's GIN styles are redrawn; self-training's labeller is refreshed at step 2 in both)."""
    straight = fit(phantom_root, 4, labeller)
    every_2 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    fit(phantom_root, 2, labeller, callbacks=[every_2], enable_checkpointing=True)
    resumed = fit(phantom_root, 4, labeller, ckpt_path=str(tmp_path / "step=2.ckpt"))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), f"{key} differs after resume"
    initial = every_option(labeller).state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in straight.state_dict().items() if k.startswith("seg."))


class AtStep(WeakToStrong):
    """WeakToStrong at a chosen iteration, without a trainer."""

    step = 0

    @property
    def global_step(self) -> int:
        return self.step


def test_self_training_rounds_learn_from_a_frozen_copy_of_the_teacher_after_the_first_round():
    torch.manual_seed(0)
    model = AtStep(pseudo_labeller="rounds", round_steps=3, confidence=0.0, **SEGMENTOR)
    batch = batch_of()
    first = model.unlabelled_losses(batch)
    assert set(first) == {"loss_unlabelled"} and float(first["loss_unlabelled"]) == 0.0  # round 0: labelled only
    nudge = lambda: model.teacher.net.model[0].conv.unit0.conv.weight.data.add_(0.5)  # noqa: E731
    nudge()
    model.step = 3
    assert "loss_u_strong" in model.unlabelled_losses(batch) and int(model.labeller.current_round) == 1
    copied = {k: v.clone() for k, v in model.labeller.net.state_dict().items()}
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in copied.items())
    nudge()
    model.step = 5  # same round: the labeller stays frozen while the teacher moves on
    model.unlabelled_losses(batch)
    assert all(torch.equal(v, model.labeller.net.state_dict()[k]) for k, v in copied.items())
    assert not torch.equal(model.labeller.net.net.model[0].conv.unit0.conv.weight, model.teacher.net.model[0].conv.unit0.conv.weight)
    with torch.no_grad():
        assert torch.equal(model.pseudo_label(batch["x_u"])[0], model.labeller(batch["x_u"]).argmax(1))
    with pytest.raises(ValueError, match="model.round_steps"):
        WeakToStrong(pseudo_labeller="rounds", round_steps=0, **SEGMENTOR)
