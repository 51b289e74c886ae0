"""The options beside the paper: the shared-kernel segmentor with prototype KD (Dou et al. 2020), the
unlabelled target subjects of the training fold, and the mean teacher that learns from them."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mkdseg.data.datasets import UnpairedSampler
from mkdseg.losses import prototype_distillation_loss
from mkdseg.methods import MeanTeacher, SharedKernelKD
from mkdseg.methods.mean_teacher import sigmoid_rampup
from mkdseg.nets import ResidualUNet, SharedKernelUNet

from conftest import TINY_MODEL, make_datamodule, quiet_trainer

SEGMENTOR = {k: TINY_MODEL[k] for k in ("image_size", "seg_channels", "seg_strides", "seg_res_units", "eval_batch_size")}


# -- shared kernels, modality-specific normalisation ---------------------------------------------
def test_shared_kernel_unet_shares_every_kernel_and_nothing_else():
    net = SharedKernelUNet(num_classes=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    plain = ResidualUNet(num_classes=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    kernels = sum(p.numel() for p in plain.parameters())
    affine = sum(2 * m.norm.num_features for m in net.norms)  # a scale and a shift per channel
    assert sum(p.numel() for p in net.parameters()) == kernels + 2 * affine  # one affine per modality
    x = torch.randn(2, 1, 16, 16)
    before_t = net(x, "t")
    with torch.no_grad():
        for norm in net.norms:
            norm.scale["a"].mul_(3.0)
    assert torch.equal(net(x, "t"), before_t)  # the target's normalisation is its own
    assert not torch.allclose(net(x, "a"), before_t)
    with pytest.raises(ValueError, match="modality must be one of"):
        net(x, "mr")


def test_prototype_distillation_is_symmetric_and_zero_only_for_equal_prototypes():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    a, t = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = prototype_distillation_loss(a, labels, t, labels)
    assert loss > 0
    assert torch.allclose(loss, prototype_distillation_loss(t, labels, a, labels))
    loss.backward()
    assert a.grad.abs().sum() > 0 and t.grad.abs().sum() > 0  # both modalities are pulled together
    # a class absent from one batch does not count: only the prototypes of shared classes are compared
    only_zero = torch.zeros_like(labels)
    shifted = a.detach().clone()
    shifted[:, 0] += 5.0  # changes every prototype; class 0's is the only one both batches have
    assert float(prototype_distillation_loss(a.detach(), only_zero, a.detach(), only_zero)) == 0.0
    assert prototype_distillation_loss(shifted, only_zero, a.detach(), only_zero) > 0


def test_shared_kernel_kd_trains_both_normalisations_and_predicts_with_the_targets(phantom_root):
    L.seed_everything(0)
    model = SharedKernelKD(**SEGMENTOR)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet_trainer(max_steps=3).fit(model, datamodule=make_datamodule(phantom_root))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(".scale.a" in k for k in changed) and any(".scale.t" in k for k in changed)
    x = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict_proba(x), model.net(x, "t").softmax(1))
    with pytest.raises(ValueError, match="model.lambda_proto"):
        SharedKernelKD(lambda_proto=-1.0, **SEGMENTOR)


# -- unlabelled target subjects ---------------------------------------------------------------------
def test_unlabelled_target_slices_come_from_the_training_folds_other_subjects(phantom_root):
    dm = make_datamodule(phantom_root, n_val=0, n_target=1, unlabelled_target=True)
    dm.setup("fit")
    labelled = {r.subject for r in dm.target_train.records}
    unlabelled = {r.subject for r in dm.target_unlabelled.records}
    assert unlabelled and not unlabelled & labelled
    assert not unlabelled & {r.subject for r in dm.test_records + dm.val_records}
    assert all(label is None for _, label in dm.target_unlabelled.volumes)  # their labels are never read
    batch = next(iter(dm.train_dataloader()))
    assert batch["x_u"].shape == batch["x_t"].shape and "y_u" not in batch
    assert "unlabelled" in dm.described_training()


def test_unlabelled_target_needs_subjects_beyond_n_target(phantom_root):
    dm = make_datamodule(phantom_root, n_val=0, unlabelled_target=True)  # every training subject is labelled
    with pytest.raises(ValueError, match="data.unlabelled_target"):
        dm.setup("fit")


def test_sampler_draws_the_same_pairs_with_or_without_unlabelled_slices():
    plain = list(UnpairedSampler(n_target=6, n_assistant=5, num_samples=20, seed=3))
    with_u = list(UnpairedSampler(n_target=6, n_assistant=5, num_samples=20, seed=3, n_unlabelled=4))
    assert [code // 4 for code in with_u] == plain  # a run without them is unchanged
    assert len({code % 4 for code in with_u}) > 1


# -- mean teacher -------------------------------------------------------------------------------------
def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(500, 100) == 1.0 == sigmoid_rampup(0, 0)


def test_mean_teacher_follows_the_student_and_is_not_optimised(phantom_root):
    L.seed_everything(0)
    model = MeanTeacher(ema_decay=0.5, **SEGMENTOR)
    initial = [p.clone() for p in model.teacher.parameters()]
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, datamodule=make_datamodule(phantom_root, n_val=0, n_target=1, unlabelled_target=True))
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.teacher.parameters()}
    teacher, student = list(model.teacher.parameters()), list(model.seg.parameters())
    assert any(not torch.equal(t, i) for t, i in zip(teacher, initial))  # it moved ...
    assert any(not torch.equal(t, s) for t, s in zip(teacher, student))  # ... but lags the student
    assert model.primary_predictor == "teacher"


def test_mean_teacher_without_unlabelled_slices_names_the_option(phantom_root):
    model = MeanTeacher(**SEGMENTOR)
    with pytest.raises(ValueError, match="data.unlabelled_target"):
        quiet_trainer(max_steps=1).fit(model, datamodule=make_datamodule(phantom_root))


def test_mkd_translator_learns_the_target_appearance_from_the_unlabelled_slices(phantom_root):
    from conftest import make_model

    L.seed_everything(0)
    model = make_model()
    seen = []
    translate = model.translator.translate
    model.translator.translate = lambda x_a, x_t: seen.append(x_t) or translate(x_a, x_t)
    dm = make_datamodule(phantom_root, n_val=0, n_target=1, unlabelled_target=True)

    class Batches(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    quiet_trainer(max_steps=2, callbacks=[Batches()]).fit(model, datamodule=dm)
    for batch, x_t in zip(seen[0::2], seen[1::2]):
        assert torch.equal(x_t, batch["x_u"]) and not torch.equal(x_t, batch["x_t"])


def test_mean_teacher_gin_student_view_restyles_the_students_input_only(phantom_root, monkeypatch):
    import mkdseg.methods.mean_teacher as mt

    styled = []
    monkeypatch.setattr(mt, "random_convolution", lambda x: styled.append(x) or -x)
    model = MeanTeacher(student_view="gin", input_noise=0.0, **SEGMENTOR)
    x = torch.rand(2, 1, 32, 32)
    batch = {"x_a": x, "y_a": torch.zeros(2, 32, 32, dtype=torch.long), "x_t": x, "y_t": torch.zeros(2, 32, 32, dtype=torch.long),
             "x_u": x}
    losses = model.losses(batch)
    assert len(styled) == 1 and styled[0] is x  # one re-styling, of the student's view
    assert losses["loss_unlabelled"] > 0  # -x and x give different predictions; with "noise" and no noise: none
    assert float(MeanTeacher(input_noise=0.0, **SEGMENTOR).losses(batch)["loss_unlabelled"]) == 0.0
    with pytest.raises(ValueError, match="model.student_view"):
        MeanTeacher(student_view="cutmix", **SEGMENTOR)
