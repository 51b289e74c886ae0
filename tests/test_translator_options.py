"""The image alignment module's departures from the paper: resize-convolution upsampling and CycleGAN's
linear learning-rate decay. Both are off by default; the defaults are the paper's."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mkdseg.methods import OfflineTranslation
from mkdseg.methods.cyclegan import linear_decay_factor
from mkdseg.nets import ResnetGenerator, init_weights

from conftest import TINY_MODEL, make_datamodule, make_model, quiet_trainer

LR_GEN, LR_DISC, LR_SEG = 4e-4, 3e-4, 1e-3


def stride_2_pattern(image: torch.Tensor) -> float:
    """How much the four stride-2 sub-grids of the image's interior differ (0 for a flat image). The
    interior lies beyond the generator's receptive field from the zero-padded borders."""
    inner = image[..., 40:-40, 40:-40]
    means = torch.stack([inner[..., i::2, j::2].mean() for i in (0, 1) for j in (0, 1)])
    return float(means.max() - means.min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transposed_convolutions_paint_a_chequerboard_that_resize_convolutions_do_not(seed):
    """A flat input (a blood pool) comes out with a stride-2 pattern through transposed convolutions,
    flat through nearest-neighbour resizing then convolving: the reason for ``gen_upsampling=resize``."""
    flat = torch.full((1, 1, 128, 128), 0.3)
    torch.manual_seed(seed)
    transpose = init_weights(ResnetGenerator(ngf=8, n_blocks=1, upsampling="transpose")).eval()
    torch.manual_seed(seed)
    resize = init_weights(ResnetGenerator(ngf=8, n_blocks=1, upsampling="resize")).eval()
    with torch.no_grad():
        assert stride_2_pattern(transpose(flat)) > 1e-3
        assert stride_2_pattern(resize(flat)) < 1e-6
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())


def test_unknown_options_are_refused_by_name():
    with pytest.raises(ValueError, match="upsampling"):
        ResnetGenerator(upsampling="bilinear-ish")
    with pytest.raises(ValueError, match="model.gan_lr_decay"):
        make_model(gan_lr_decay="cosine")


def test_linear_decay_factor_is_cyclegans_schedule():
    assert [linear_decay_factor(s, 8) for s in range(10)] == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0, 0]


class LearningRates(L.Callback):
    """The learning rate each optimizer used, per iteration."""

    def __init__(self):
        self.rows: list[tuple[int, dict[str, float]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        named = pl_module.named_optimizers()
        self.rows.append((trainer.global_step - 1, {n: named[n].param_groups[0]["lr"] for n in named}))


def fit(root, max_steps: int, decay: str, checkpoint=None, ckpt_path=None) -> LearningRates:
    L.seed_everything(0)
    model = make_model(gan_lr_decay=decay, lr_gen=LR_GEN, lr_disc=LR_DISC, lr_seg=LR_SEG, seg_lr_decay=1.0)
    rates = LearningRates()
    trainer = quiet_trainer(max_steps=max_steps, callbacks=[rates] + ([checkpoint] if checkpoint else []),
                            enable_checkpointing=checkpoint is not None)
    trainer.fit(model, datamodule=make_datamodule(root, samples_per_epoch=6), ckpt_path=ckpt_path)
    return rates


def test_linear_decay_reaches_the_translator_only_and_survives_a_resume(phantom_root, tmp_path):
    rates = fit(phantom_root, 8, "linear", ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}"))
    expected = [linear_decay_factor(s, 8) for s in range(8)]
    assert [step for step, _ in rates.rows] == list(range(8))
    for (step, lr), factor in zip(rates.rows, expected):
        assert lr["g_at"] == lr["g_ta"] == pytest.approx(LR_GEN * factor)
        assert lr["d_t"] == lr["d_a"] == pytest.approx(LR_DISC * factor)
        assert lr["s_syn"] == lr["s_real"] == LR_SEG  # the segmentors keep their own schedule
    resumed = fit(phantom_root, 8, "linear", ckpt_path=str(tmp_path / "step=4.ckpt"))
    assert resumed.rows == rates.rows[4:]


def test_constant_is_the_default_and_never_changes_the_rates(phantom_root):
    assert make_model().hparams.gan_lr_decay == "constant"
    rates = fit(phantom_root, 3, "constant")
    assert all(lr["g_at"] == LR_GEN and lr["d_a"] == LR_DISC for _, lr in rates.rows)


def test_offline_translation_decays_over_its_translation_stage():
    model = OfflineTranslation(translation_steps=5, **TINY_MODEL)
    assert model.translator_steps() == 5


class ActivationFormats(L.Callback):
    """Whether S_real's output on each training batch is channels-last."""

    def __init__(self):
        self.channels_last: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            out = pl_module.s_real(batch["x_t"])
        self.channels_last.append(out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous())


def test_channels_last_changes_the_layout_not_the_arithmetic(phantom_root):
    from mkdseg.callbacks.memory_format import ChannelsLast

    def train(callbacks):
        L.seed_everything(0)
        model, formats = make_model(), ActivationFormats()
        quiet_trainer(max_steps=3, callbacks=[*callbacks, formats]).fit(model, datamodule=make_datamodule(phantom_root))
        return model, formats.channels_last

    fast, seen = train([ChannelsLast()])
    plain, seen_plain = train([])
    assert seen == [True] * 3 and seen_plain == [False] * 3
    assert fast.translator.g_at.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    # Compared by what the networks compute: Adam turns rounding-level differences in near-zero gradients
    # (e.g. of the biases before an instance norm, which it cancels) into whole +-lr steps on those weights.
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(fast.eval().predict_proba(x), plain.eval().predict_proba(x), atol=1e-3)
        assert torch.allclose(fast.translator.g_at(x), plain.translator.g_at(x), atol=1e-3)


# -- MKD's translator-only warm-up and the lambda_sup ramp ---------------------------------------------
class PhaseLog(L.Callback):
    """The phases of each iteration, by network names, observed through ManualMethod.on_phase_end."""

    def __init__(self, model):
        self.phases: list[str] = []
        original = model.on_phase_end
        model.on_phase_end = lambda phase: (self.phases.append(phase), original(phase))


def test_warm_up_iterations_train_only_the_translator_then_algorithm_1_runs(phantom_root):
    model = make_model(translator_warmup_steps=2)
    log = PhaseLog(model)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, datamodule=make_datamodule(phantom_root))
    translator = ["g_at+g_ta", "d_t+d_a"]
    assert log.phases == translator + translator + translator + ["s_syn+s_real"]
    assert trainer.global_step == 3  # a warm-up iteration counts as one iteration


def test_warm_up_delays_the_segmentors_learning_rate_decay(phantom_root):
    def segmentor_lr(warmup: int) -> float:
        model = make_model(translator_warmup_steps=warmup)
        trainer = quiet_trainer(max_steps=5)
        trainer.fit(model, datamodule=make_datamodule(phantom_root, samples_per_epoch=2))  # one iteration an epoch
        return trainer.optimizers[4].param_groups[0]["lr"]

    assert segmentor_lr(0) == pytest.approx(2e-4 * 0.9**2)  # 5 epochs: 2 decays
    assert segmentor_lr(3) == pytest.approx(2e-4 * 0.9)  # the segmentors trained in 2 epochs: 1 decay


def test_lambda_sup_ramps_in_after_the_warm_up():
    from mkdseg.methods.mkd import ramped

    assert [ramped(2.0, step, 10, 4) for step in (0, 9, 10, 11, 12, 13, 14, 100)] == [0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [ramped(2.0, step, 10, 0) for step in (0, 10, 100)] == [2.0] * 3  # no ramp: the paper's constant weight
    model = make_model(translator_warmup_steps=10, lambda_sup_ramp_steps=4, lambda_sup_gen=2.0)
    assert model.sup_gen_weight() == 0.0  # global_step 0: still warming up
