"""Mixed precision with six optimizers, and the compile flag, on CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from mkdseg.methods.cyclegan import CycleGANTranslator
from mkdseg.methods.mkd import OPTIMIZER_ORDER, MKDModule

from conftest import TINY_MODEL, make_datamodule, make_model, quiet_trainer

PHASES = ("g_at+g_ta", "d_t+d_a", "s_syn+s_real")


def optimizer_steps(trainer) -> dict[str, int]:
    return {name: int(next(iter(opt.state.values()))["step"]) if opt.state else 0
            for name, opt in zip(OPTIMIZER_ORDER, trainer.optimizers)}


def test_bf16_mixed_trains_all_six_networks(phantom_root):
    model, dm = make_model(), make_datamodule(phantom_root)
    before = {name: copy.deepcopy(model.network(name).state_dict()) for name in OPTIMIZER_ORDER}
    trainer = quiet_trainer(max_steps=3, precision="bf16-mixed")
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert optimizer_steps(trainer) == dict.fromkeys(OPTIMIZER_ORDER, 3)
    losses = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")}
    assert len(losses) == 15 and all(torch.isfinite(v) for v in losses.values())
    for name in OPTIMIZER_ORDER:
        for key, value in model.network(name).state_dict().items():
            assert value.dtype == torch.float32  # master weights stay fp32
            assert not torch.equal(value, before[name][key]), f"{name}.{key} did not change"
    assert model.translator.pool_t.images[0].dtype == torch.bfloat16  # the generators ran under autocast


def fp16_trainer(max_steps: int, init_scale: float = 256.0):
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    return quiet_trainer(max_steps=max_steps, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])


def test_fp16_each_phase_has_its_own_loss_scale_and_overflow_skips_only_that_phase(phantom_root, monkeypatch):
    """An overflow in the discriminator phase of the first iteration: the discriminators skip that
    step and halve their scale; the generators and segmentors step with their scales untouched;
    the iteration still counts. (With Lightning's one scaler updated after every optimizer step, the
    overflow would halve the scale for all six and unscale later optimizers with the wrong scale.)"""
    original = CycleGANTranslator.discriminator_losses
    calls = []

    def overflow_once(self, *args):
        losses = original(self, *args)
        calls.append(1)
        if len(calls) == 1:
            losses["loss_d"] = losses["loss_d"] * float("inf")
        return losses

    monkeypatch.setattr(CycleGANTranslator, "discriminator_losses", overflow_once)
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer = fp16_trainer(max_steps=2)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    assert trainer.precision_plugin.scaler is None  # taken over by the phases
    assert optimizer_steps(trainer) == {"g_at": 2, "g_ta": 2, "d_t": 1, "d_a": 1, "s_syn": 2, "s_real": 2}
    scales = {phase: float(trainer.callback_metrics[f"train/amp_scale/{phase}"]) for phase in PHASES}
    assert scales == {"g_at+g_ta": 256.0, "d_t+d_a": 128.0, "s_syn+s_real": 256.0}  # settings of the plugin's scaler
    assert float(trainer.callback_metrics["train/amp_skipped/d_t+d_a"]) == 1.0
    assert float(trainer.callback_metrics["train/amp_skipped/g_at+g_ta"]) == 0.0
    for name in OPTIMIZER_ORDER:
        assert all(torch.isfinite(p).all() for p in model.network(name).parameters())


def test_fp16_loss_scales_are_checkpointed(phantom_root, tmp_path):
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer = fp16_trainer(max_steps=2, init_scale=512.0)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "amp.ckpt")
    checkpoint = torch.load(tmp_path / "amp.ckpt", weights_only=True)
    assert set(checkpoint["loss_scaling"]["scalers"]) == set(PHASES)
    assert all(s["scale"] == 512.0 for s in checkpoint["loss_scaling"]["scalers"].values())

    resumed = make_model()
    trainer = fp16_trainer(max_steps=3, init_scale=4.0)
    trainer.fit(resumed, datamodule=make_datamodule(phantom_root), ckpt_path=tmp_path / "amp.ckpt")
    assert trainer.global_step == 3
    assert all(float(trainer.callback_metrics[f"train/amp_scale/{p}"]) == 512.0 for p in PHASES)


@pytest.fixture
def compiled(monkeypatch) -> list:
    """The modules ``nn.Module.compile`` is called on, traced with dynamo's eager backend: inductor's code generation
    takes tens of seconds on a CPU (the real compile runs in ``mkdseg compare``'s runs and benchmarks/run_breakdown)."""
    compile_ = torch.nn.Module.compile
    calls = []

    def eager_compile(self, **kwargs):
        calls.append(self)
        return compile_(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    return calls


SEGMENTOR_SIZES = {k: v for k, v in TINY_MODEL.items() if k in ("image_size", "seg_channels", "seg_strides", "seg_res_units")}


def test_compile_flag_compiles_each_network_in_place(phantom_root, compiled):
    """``compile: true`` compiles the six networks when the trainer sets the model up, keeping the checkpoint keys."""
    model, dm = make_model(compile=True), make_datamodule(phantom_root)
    keys = set(model.state_dict())
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss_seg"])
    trainer.validate(model, datamodule=dm, verbose=False)  # the setup hook runs again: no second compile
    assert [id(m) for m in compiled] == [id(model.network(n)) for n in OPTIMIZER_ORDER]
    assert set(model.state_dict()) == keys
    compiled.clear()
    quiet_trainer(max_steps=1).fit(make_model(), datamodule=dm)
    assert compiled == [] and not make_model().hparams.compile  # off by default


def test_compile_flag_compiles_the_learning_segmentor_not_the_teacher(phantom_root, compiled):
    """Every segmentor method takes ``compile``: the recipe's student is compiled in place, its EMA teacher (which only
    follows) is not, and the checkpoint keys stay."""
    from mkdseg.methods import WeakToStrong

    model = WeakToStrong(compile=True, mix_back=True, **SEGMENTOR_SIZES)
    keys = set(model.state_dict())
    dm = make_datamodule(phantom_root, n_val=0, n_target=1, unlabelled_target=True)
    quiet_trainer(max_steps=2).fit(model, datamodule=dm)
    assert compiled == [model.seg] and set(model.state_dict()) == keys


def test_compile_without_a_cpp_compiler_trains_uncompiled_and_says_so(phantom_root, compiled, monkeypatch):
    from mkdseg.methods import JointTraining, segmentors

    monkeypatch.setattr(segmentors.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        quiet_trainer(max_steps=1).fit(JointTraining(compile=True, **SEGMENTOR_SIZES), datamodule=make_datamodule(phantom_root))
    assert compiled == []
