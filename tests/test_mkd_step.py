"""The MKD training iteration: which optimizer steps, which network each phase may change."""

from __future__ import annotations

import copy

import pytest
import torch

from mkdseg.methods.manual import frozen
from mkdseg.methods.mkd import OPTIMIZER_ORDER, MKDModule

from conftest import make_datamodule, make_model, quiet_trainer

NETWORKS = ("g_at", "g_ta", "d_t", "d_a", "s_syn", "s_real")


def snapshot(model: MKDModule) -> dict[str, dict[str, torch.Tensor]]:
    return {n: copy.deepcopy(model.network(n).state_dict()) for n in NETWORKS}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_one_iteration_steps_each_optimizer_once_and_changes_every_network(phantom_root):
    model, dm = make_model(), make_datamodule(phantom_root)
    before = snapshot(model)
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, datamodule=dm)
    optimizers = trainer.optimizers
    assert len(optimizers) == 6
    for name, opt in zip(OPTIMIZER_ORDER, optimizers):
        steps = {int(opt.state[p]["step"]) for group in opt.param_groups for p in group["params"]}
        assert steps == {1}, f"optimizer of {name} stepped {steps} times"
        # each optimizer owns exactly its network's parameters
        owned = {id(p) for group in opt.param_groups for p in group["params"]}
        assert owned == {id(p) for p in model.network(name).parameters()}
    after = snapshot(model)
    for name in NETWORKS:
        assert not identical(before[name], after[name]), f"{name} did not change"
    # max_steps counts iterations, not the six optimizer steps
    assert trainer.global_step == 1


def test_max_steps_counts_iterations(phantom_root):
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    for opt in trainer.optimizers:
        p = opt.param_groups[0]["params"][0]
        assert int(opt.state[p]["step"]) == 3


def test_each_phase_touches_only_its_own_networks(phantom_root, monkeypatch):
    """Generator phase: only G changes and S_syn stays bit-identical with no gradient;
    discriminator phase: only D; segmentor phase: only S."""
    model, dm = make_model(), make_datamodule(phantom_root)
    states = [snapshot(model)]
    syn_grads_after_generator_phase = []
    def record(self, phase):
        if len(states) == 1:
            syn_grads_after_generator_phase.extend(p.grad for p in self.s_syn.parameters())
        states.append(snapshot(self))

    monkeypatch.setattr(MKDModule, "on_phase_end", record)
    quiet_trainer(max_steps=1).fit(model, datamodule=dm)
    assert len(states) == 4, "expected three optimisation phases"
    changed_by_phase = [{n for n in NETWORKS if not identical(states[i][n], states[i + 1][n])} for i in range(3)]
    assert changed_by_phase[0] == {"g_at", "g_ta"}
    assert changed_by_phase[1] == {"d_t", "d_a"}
    assert changed_by_phase[2] == {"s_syn", "s_real"}
    assert all(g is None for g in syn_grads_after_generator_phase), "S_syn kept a gradient from the generator step"


def test_generator_gets_gradient_from_s_syn_supervised_loss_but_s_syn_does_not():
    model = make_model()
    x_a, x_t = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    y_a = torch.randint(0, 8, (2, 32, 32))
    fake_t = model.translator.g_at(x_a)
    with frozen(model.translator.d_t, model.translator.d_a, model.s_syn):
        losses = model.generator_losses(x_a, y_a, x_t, fake_t, model.translator.g_ta(fake_t), model.translator.g_ta(x_t), model.translator.g_at(model.translator.g_ta(x_t)))
        losses["loss_g_sup_syn"].backward()
    assert all(p.grad is None for p in model.s_syn.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.translator.g_at.parameters())
    # the supervised term does not reach G_ta
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.translator.g_ta.parameters())
    assert all(p.requires_grad for p in model.s_syn.parameters()), "frozen() must restore requires_grad"


def _segmentor_grads(model: MKDModule, inputs) -> dict[str, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    model.segmentor_losses(*inputs)["loss_seg"].backward()
    return {n: [p.grad.clone() for p in getattr(model, n).parameters()] for n in ("s_syn", "s_real")}


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, atol=1e-7, rtol=1e-5) for x, y in zip(a, b))


def test_lambda_kd_real_zero_removes_exactly_the_syn_to_real_term():
    torch.manual_seed(1)
    inputs = (torch.randn(2, 1, 32, 32), torch.randint(0, 8, (2, 32, 32)), torch.randn(2, 1, 32, 32), torch.randint(0, 8, (2, 32, 32)))
    with_kd = make_model()
    without_kd = make_model(lambda_kd_real=0.0)
    without_kd.load_state_dict(with_kd.state_dict())
    g_with, g_without = _segmentor_grads(with_kd, inputs), _segmentor_grads(without_kd, inputs)
    # S_real's gradient changes: the syn->real term is gone ...
    assert not _close(g_with["s_real"], g_without["s_real"])
    # ... and what is left is exactly the gradient of S_real's supervised loss
    fake_t, _, x_t, y_t = inputs
    without_kd.zero_grad(set_to_none=True)
    from mkdseg.losses import supervised_loss

    supervised_loss(without_kd.s_real(x_t), y_t).backward()
    assert _close(g_without["s_real"], [p.grad for p in without_kd.s_real.parameters()])
    # S_syn's gradient is untouched: the real->syn term and S_syn's own loss remain
    assert _close(g_with["s_syn"], g_without["s_syn"])


def test_lambda_kd_syn_zero_removes_exactly_the_real_to_syn_term():
    torch.manual_seed(2)
    inputs = (torch.randn(2, 1, 32, 32), torch.randint(0, 8, (2, 32, 32)), torch.randn(2, 1, 32, 32), torch.randint(0, 8, (2, 32, 32)))
    with_kd = make_model()
    without_kd = make_model(lambda_kd_syn=0.0)
    without_kd.load_state_dict(with_kd.state_dict())
    g_with, g_without = _segmentor_grads(with_kd, inputs), _segmentor_grads(without_kd, inputs)
    assert not _close(g_with["s_syn"], g_without["s_syn"])
    assert _close(g_with["s_real"], g_without["s_real"])


def test_ensemble_is_mean_of_the_two_softmax_maps():
    model = make_model().eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = (model.s_syn(x).softmax(1) + model.s_real(x).softmax(1)) / 2
        components = model.predict_components(x)
        assert torch.allclose(components["ens"], expected, atol=1e-6)
        assert torch.allclose(model.predict_proba(x), expected, atol=1e-6)
        assert torch.allclose(components["ens"].sum(1), torch.ones(3, 32, 32), atol=1e-5)


def test_segmentor_learning_rate_decays_every_two_epochs(phantom_root):
    model, dm = make_model(), make_datamodule(phantom_root, samples_per_epoch=2)  # one iteration per epoch
    trainer = quiet_trainer(max_steps=5)
    trainer.fit(model, datamodule=dm)
    lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    assert lrs[:4] == [2e-4] * 4  # generators and discriminators keep their rate
    assert lrs[4] == pytest.approx(2e-4 * 0.9**2) and lrs[5] == pytest.approx(2e-4 * 0.9**2)  # after 5 epochs: 2 decays


def test_every_loss_term_is_logged_under_a_stable_name(phantom_root):
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, datamodule=dm)
    expected = {
        "train/loss_g", "train/loss_g_adv_t", "train/loss_g_adv_a", "train/loss_cyc", "train/loss_g_sup_syn",
        "train/loss_d", "train/loss_d_t", "train/loss_d_a", "train/loss_seg", "train/loss_seg_real",
        "train/loss_seg_real_sup", "train/loss_kd_syn2real", "train/loss_seg_syn", "train/loss_seg_syn_sup",
        "train/loss_kd_real2syn",
    }
    assert expected <= set(trainer.callback_metrics)
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in expected)


def test_default_model_is_the_paper_configuration():
    model = MKDModule()
    hp = model.hparams
    assert (hp.image_size, hp.lambda_cyc, hp.lambda_kd_real, hp.lambda_kd_syn) == (256, 10.0, 0.5, 1.0)
    assert (hp.lr_gen, hp.lr_disc, hp.lr_seg, hp.seg_lr_decay, hp.seg_lr_decay_epochs) == (2e-4, 2e-4, 2e-4, 0.9, 2)
    assert (hp.gen_filters, hp.gen_blocks, hp.disc_filters, hp.disc_layers, hp.pool_size) == (64, 9, 64, 3, 50)
    assert model.automatic_optimization is False
    assert len(model.configure_optimizers()[0]) == 6


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("lambda_kd_real", -0.1, "model.lambda_kd_real"),
        ("lambda_kd_syn", -1.0, "model.lambda_kd_syn"),
        ("lambda_cyc", -1.0, "model.lambda_cyc"),
        ("kd_temperature", 0.0, "model.kd_temperature"),
        ("image_size", 34, "image_size=34"),
        ("gan_mode", "wgan", "gan_mode"),
    ],
)
def test_bad_model_options_fail_naming_the_option(option, value, message):
    with pytest.raises(ValueError, match=message):
        make_model(**{option: value})


def test_the_iteration_counting_adapter_still_fits_lightning(phantom_root):
    """mkdseg.methods.manual counts one iteration as one global_step by switching LightningOptimizer's
    step hooks off (uncounted) and calling them once (count_iteration): Lightning has no public way.
    If a Lightning upgrade renames or changes those hooks, this fails and says which version broke it."""
    import lightning
    from lightning.pytorch.core.optimizer import LightningOptimizer

    version = lightning.__version__
    for hook in ("_on_before_step", "_on_after_step"):
        assert callable(getattr(LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)), hook, None)), (
            f"lightning {version}: LightningOptimizer.{hook} is gone; rewrite mkdseg.methods.manual.uncounted/count_iteration")
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, datamodule=dm)
    steps = [opt.state[next(iter(opt.state))]["step"].item() for opt in trainer.optimizers]
    assert trainer.global_step == 3 and steps == [3.0] * 6, (
        f"lightning {version}: 3 iterations of 6 optimizer steps each gave global_step {trainer.global_step}; "
        "the iteration-counting adapter in mkdseg.methods.manual no longer matches Lightning")
