"""The comparison methods: what each training iteration may change and read, and each through the CLI."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml

from mkdseg.cli import build_cli
from mkdseg.losses import supervised_loss
from mkdseg.methods import (
    Baseline, FineTune, JointTraining, MKDModule, MKDNoAlignment, MKDOracleTranslation, OfflineOracleTranslation,
    OfflineTranslation, OnlineTranslation, XShape,
)
from mkdseg.methods.segmentors import make_segmentor, segment_together
from mkdseg.nets.xshape import XShapeNet

from conftest import TINY_MODEL, make_datamodule, quiet_trainer

TINY_SEG = {k: TINY_MODEL[k] for k in ("image_size", "seg_channels", "seg_strides", "seg_res_units", "eval_batch_size")}
TINY_GAN = dict(TINY_MODEL)

# class, tiny options, the networks each successive optimisation phase of two iterations changes
METHODS = {
    "baseline": (Baseline, TINY_SEG, [{"seg"}, {"seg"}]),
    "finetune": (FineTune, {**TINY_SEG, "pretrain_steps": 1}, [{"seg"}, {"seg"}]),
    "joint": (JointTraining, TINY_SEG, [{"seg"}, {"seg"}]),
    "xshape": (XShape, TINY_SEG, [{"net"}, {"net"}]),
    "offline": (OfflineTranslation, {**TINY_GAN, "translation_steps": 1}, [{"g_at", "g_ta"}, {"d_t", "d_a"}, {"seg"}]),
    "online": (OnlineTranslation, TINY_GAN, [{"g_at", "g_ta"}, {"d_t", "d_a"}, {"s_a", "s_t"}] * 2),
    "online_ens": (OnlineTranslation, {**TINY_GAN, "target_segmentors": 2}, [{"g_at", "g_ta"}, {"d_t", "d_a"}, {"s_a", "s_t1", "s_t2"}] * 2),
    "mkd_no_alignment": (MKDNoAlignment, TINY_SEG, [{"s_syn", "s_real"}] * 2),
}
PRIMARY = {"online_ens": "ens", "mkd_no_alignment": "ens"}


def networks(model) -> list[str]:
    """Every network by the name its optimizer and phases use (a translator's four by theirs)."""
    children = dict(model.named_children())
    translator = children.pop("translator", None)
    named = {**(dict(translator.named_children()) if translator is not None else {}), **children}
    return [n for n, m in named.items() if any(True for _ in m.parameters())]


def snapshot(model) -> dict[str, dict[str, torch.Tensor]]:
    return {n: copy.deepcopy(model.network(n).state_dict()) for n in networks(model)}


def changed(a: dict, b: dict) -> set[str]:
    return {n for n in a if not all(torch.equal(a[n][k], b[n][k]) for k in a[n])}


def grads(model) -> dict[str, list]:
    return {n: [None if p.grad is None else p.grad.clone() for p in model.network(n).parameters()] for n in networks(model)}


def grads_changed(a: dict, b: dict) -> set[str]:
    def same(x, y):
        return (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))

    return {n for n in a if not all(same(x, y) for x, y in zip(a[n], b[n]))}


def batch(n: int = 2, size: int = 32, poison: str | None = None) -> dict[str, torch.Tensor]:
    """A training batch; ``poison`` ('a' or 't') fills that modality's images with NaN."""
    out = {"x_a": torch.randn(n, 1, size, size), "y_a": torch.randint(0, 8, (n, size, size)),
           "x_t": torch.randn(n, 1, size, size), "y_t": torch.randint(0, 8, (n, size, size))}
    if poison:
        out[f"x_{poison}"] = torch.full_like(out[f"x_{poison}"], float("nan"))
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_each_update_changes_only_its_networks_and_global_step_counts_iterations(name, phantom_root, monkeypatch):
    cls, options, expected_phases = METHODS[name]
    model = cls(**options)
    states, gradients = [snapshot(model)], [grads(model)]
    trainer = quiet_trainer(max_steps=2)
    if model.automatic_optimization:
        # one optimizer step per iteration: record after each
        original = cls.on_train_batch_end

        def record(self, *args):
            states.append(snapshot(self))
            gradients.append(grads(self))
            return original(self, *args)

        monkeypatch.setattr(cls, "on_train_batch_end", record)
    else:
        def record(self, phase):
            states.append(snapshot(self))
            gradients.append(grads(self))

        monkeypatch.setattr(cls, "on_phase_end", record)
    trainer.fit(model, datamodule=make_datamodule(phantom_root))
    phases = [changed(states[i], states[i + 1]) for i in range(len(states) - 1)]
    assert phases == expected_phases
    # a phase's backward reaches no other network (those held fixed keep no gradient from it)
    assert [grads_changed(gradients[i], gradients[i + 1]) for i in range(len(phases))] == expected_phases
    assert trainer.global_step == 2, "global_step must count iterations, not optimizer steps"
    # every network that trains is owned by exactly one optimizer, stepped once per phase that changed it
    for opt in trainer.optimizers:
        owned = {id(p) for g in opt.param_groups for p in g["params"]}
        owners = [n for n in networks(model) if {id(p) for p in model.network(n).parameters()} <= owned]
        assert owners, "optimizer owns no whole network"
        steps = {int(opt.state[p]["step"]) for g in opt.param_groups for p in g["params"] if p in opt.state}
        assert steps == {sum(1 for phase in phases if set(owners) <= phase)}
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert logged and all(k.startswith("train/loss_") for k in logged)
    assert "train/loss_seg" in logged
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


@pytest.mark.parametrize(
    "cls, options, reads",
    [
        (Baseline, {}, "t"),
        (FineTune, {"pretrain_steps": 5}, "a"),  # global_step 0 < 5: pre-training
        (FineTune, {"pretrain_steps": 0}, "t"),
        (JointTraining, {}, "at"),
        (JointTraining, {"assistant_weight": 0.0}, "t"),  # the ablation without the assistant
        (XShape, {}, "at"),
    ],
)
def test_which_modality_each_single_segmentor_method_learns_from(cls, options, reads):
    model = cls(**TINY_SEG, **options)
    for modality in "at":
        loss = model.losses(batch(poison=modality))["loss_seg"]
        assert math.isnan(loss.item()) == (modality in reads), f"{cls.__name__} reading x_{modality}: {loss.item()}"


def test_xshape_streams_share_only_the_middle():
    net = XShapeNet(1, 8, (4, 8, 16), (2, 2), 1, streams=("a", "t"))
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 8, (2, 32, 32))
    supervised_loss(net(x, "t"), y).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(grads[n] is None for n in net.stream_parameters("a")), "target loss reached the assistant stream"
    assert all(grads[n] is not None for n in net.stream_parameters("t"))
    shared = [n for n in grads if n.startswith("shared_")]
    assert shared and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in shared)
    # the prediction (target stream) does not depend on the assistant stream's weights
    model = XShape(**TINY_SEG).eval()
    with torch.no_grad():
        before = model.predict_proba(x)
        for n, p in model.net.named_parameters():
            if n in model.net.stream_parameters("a"):
                p.add_(1.0)
        assert torch.equal(before, model.predict_proba(x))
    with pytest.raises(ValueError, match="len\\(channels\\) >= 3"):
        XShapeNet(channels=(4, 8), strides=(2,))


def test_online_generators_get_shape_consistency_gradients_but_segmentors_do_not():
    from mkdseg.methods.manual import frozen

    model = OnlineTranslation(**TINY_GAN, target_segmentors=2)
    b = batch()
    fake_t, fake_a = model.translator.g_at(b["x_a"]), model.translator.g_ta(b["x_t"])
    segmentors = [model.s_a, model.s_t1, model.s_t2]
    with frozen(*segmentors):
        losses = model.shape_losses(fake_t, b["y_a"], fake_a, b["y_t"])
        losses["loss_g_shape_t"].backward(retain_graph=True)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.translator.g_at.parameters())
        assert all(p.grad is None for p in model.translator.g_ta.parameters())
        model.zero_grad(set_to_none=True)
        losses["loss_g_shape_a"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.translator.g_ta.parameters())
        assert all(p.grad is None for p in model.translator.g_at.parameters())
    assert all(p.grad is None for s in segmentors for p in s.parameters())
    assert all(p.requires_grad for s in segmentors for p in s.parameters())


def test_ensemble_segmentors_are_independent_and_averaged():
    model = OnlineTranslation(**TINY_GAN, target_segmentors=2).eval()
    assert not torch.equal(next(model.s_t1.parameters()), next(model.s_t2.parameters()))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        c = model.predict_components(x)
    assert set(c) == {"seg1", "seg2", "ens"} and model.primary_predictor == "ens"
    assert torch.allclose(c["ens"], (model.s_t1(x).softmax(1) + model.s_t2(x).softmax(1)) / 2, atol=1e-6)
    assert set(OnlineTranslation(**TINY_GAN).predict_components(x)) == {"seg"}


def test_no_alignment_is_mkd_segmentor_step_with_raw_assistant_images():
    ablation = MKDNoAlignment(**TINY_SEG)
    assert not any(hasattr(ablation, n) for n in ("g_at", "g_ta", "d_t", "d_a"))
    full = MKDModule(**TINY_GAN)
    full.s_syn.load_state_dict(ablation.s_syn.state_dict())
    full.s_real.load_state_dict(ablation.s_real.state_dict())
    b = batch()
    got = ablation.segmentor_losses(b["x_a"], b["y_a"], b["x_t"], b["y_t"])
    want = full.segmentor_losses(b["x_a"], b["y_a"], b["x_t"], b["y_t"])
    assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k]) for k in got)
    assert got["loss_kd_syn2real"] > 0 and got["loss_kd_real2syn"] > 0


def fit_oracle_recording_inputs(cls, inner_owner, inner_name: str, phantom_root, monkeypatch) -> tuple[list, list, object]:
    """Fit ``cls`` for 2 iterations on batches with paired renderings, recording each batch and the
    tensors ``inner_owner.inner_name`` (the method's loss function) receives."""
    batches, received = [], []
    original_step, original_inner = cls.training_step, getattr(inner_owner, inner_name)

    def record_batch(self, batch, batch_idx):
        batches.append({k: v.clone() for k, v in batch.items() if k in ("x_a", "x_a_as_t", "x_t")})
        return original_step(self, batch, batch_idx)

    def record_inner(self, *args):
        received.append(args)
        return original_inner(self, *args)

    monkeypatch.setattr(cls, "training_step", record_batch)
    monkeypatch.setattr(inner_owner, inner_name, record_inner)
    model = cls(**TINY_SEG)
    before = snapshot(model)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, datamodule=make_datamodule(phantom_root, assistant_as_target=True))
    assert trainer.global_step == 2 and len(batches) == len(received) == 2
    return batches, received, changed(before, snapshot(model))


def test_oracle_translation_trains_s_syn_on_the_paired_rendering(phantom_root, monkeypatch):
    batches, received, trained = fit_oracle_recording_inputs(
        MKDOracleTranslation, MKDOracleTranslation, "segmentor_losses", phantom_root, monkeypatch)
    assert trained == {"s_syn", "s_real"}
    for batch, (fake_t, _, x_t, _) in zip(batches, received):
        assert torch.equal(fake_t, batch["x_a_as_t"]) and not torch.equal(fake_t, batch["x_a"])  # never the MR slice
        assert torch.equal(x_t, batch["x_t"])


def test_offline_oracle_trains_one_segmentor_on_the_paired_rendering_and_real_target(phantom_root, monkeypatch):
    batches, received, trained = fit_oracle_recording_inputs(
        OfflineOracleTranslation, JointTraining, "losses", phantom_root, monkeypatch)
    assert trained == {"seg"}
    for batch, (used,) in zip(batches, received):
        assert torch.equal(used["x_a"], batch["x_a_as_t"]) and not torch.equal(used["x_a"], batch["x_a"])
        assert torch.equal(used["x_t"], batch["x_t"])


@pytest.mark.parametrize("cls", [MKDOracleTranslation, OfflineOracleTranslation])
def test_oracle_controls_without_paired_renderings_name_the_option(cls, phantom_root):
    with pytest.raises(ValueError, match="data.assistant_as_target"):
        quiet_trainer(max_steps=1).fit(cls(**TINY_SEG), datamodule=make_datamodule(phantom_root))


def test_offline_segmentor_learning_rate_decays_only_once_it_trains(phantom_root):
    model = OfflineTranslation(**TINY_GAN, translation_steps=3)
    trainer = quiet_trainer(max_steps=5)
    trainer.fit(model, datamodule=make_datamodule(phantom_root, samples_per_epoch=2))  # one iteration per epoch
    seg_opt = trainer.optimizers[-1]
    assert seg_opt.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.9)  # two segmentor epochs: one decay


@pytest.mark.parametrize(
    "option, value, cls, message",
    [
        ("pretrain_steps", -1, FineTune, "model.pretrain_steps"),
        ("translation_steps", -1, OfflineTranslation, "model.translation_steps"),
        ("lambda_shape", -1.0, OnlineTranslation, "model.lambda_shape"),
        ("lambda_kd_real", -1.0, MKDNoAlignment, "model.lambda_kd_real"),
        ("lr_seg", 0.0, Baseline, "model.lr_seg"),
        ("image_size", 34, XShape, "image_size=34"),
    ],
)
def test_bad_options_fail_naming_the_option(option, value, cls, message):
    options = TINY_GAN if issubclass(cls, (OfflineTranslation, OnlineTranslation)) else TINY_SEG
    with pytest.raises(ValueError, match=message):
        cls(**{**options, option: value})


def tiny_cli_config(tmp_path: Path, phantom_root: Path, cls, options: dict) -> Path:
    init_args = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if k != "image_size"}
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": 2, "val_check_interval": 2, "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0, "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path), "name": "run"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}],
        },
        "model": {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args},
        "data": {"source": "phantom", "root": str(phantom_root), "image_size": 32, "phantom_subjects": 4,
                 "phantom_slices": 8, "batch_size": 2, "samples_per_epoch": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", list(METHODS))
def test_fit_and_test_through_the_cli(name, tmp_path, phantom_root):
    cls, options, _ = METHODS[name]
    cli = build_cli(["--config", str(tiny_cli_config(tmp_path, phantom_root, cls, options))], run=False)
    assert type(cli.model) is cls
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2
    primary = PRIMARY.get(name, "seg")
    assert cli.model.primary_predictor == primary
    assert "val/dice" in cli.trainer.callback_metrics
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    summary = cli.model.evaluation_summary("test")
    assert summary["stage"] == "test" and primary in summary["dice"]
    assert 0 <= summary["dice"][primary]["mean"]["mean"] <= 1
    assert (Path(cli.trainer.log_dir) / "summary.json").exists()
    # the checkpoint restores the same method (its saved hyper-parameters rebuild it) with the same weights
    restored = cls.load_from_checkpoint(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=False).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(restored.predict_proba(x), cli.model.eval().predict_proba(x), atol=1e-6)


def test_segmenting_two_batches_together_gives_each_its_own_logits():
    """The segmentor phases run one forward of their two batches (``segment_together``): right only
    while a slice's logits do not depend on the other slices of the batch (per-sample normalisation)."""
    seg = make_segmentor(MKDModule(**TINY_GAN).hparams, num_classes=4)
    b = batch()
    together_a, together_t = segment_together(seg, b["x_a"], b["x_t"][:1])
    assert together_a.shape[0] == b["x_a"].shape[0] and together_t.shape[0] == 1
    assert torch.allclose(together_a, seg(b["x_a"]), atol=1e-5)
    assert torch.allclose(together_t, seg(b["x_t"][:1]), atol=1e-5)


@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_a_per_iteration_schedule_sets_every_segmentor_rate_from_the_step(phantom_root, schedule):
    """``seg_lr_schedule: poly|cosine``: each iteration's segmentor learning rate is ``lr_seg * lr_factor(step, max_steps)``,
    for one optimizer (automatic optimisation) and for several stepped by hand; no step-decay scheduler is built."""
    import lightning as L

    from mkdseg.methods.segmentors import lr_factor

    for cls in (JointTraining, MKDNoAlignment):
        model = cls(seg_lr_schedule=schedule, lr_seg=1e-3, **TINY_SEG)
        seen = []

        class Rates(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, *args):
                seen.append([g["lr"] for opt in trainer.optimizers for g in opt.param_groups])

        trainer = quiet_trainer(max_steps=4, callbacks=[Rates()])
        trainer.fit(model, datamodule=make_datamodule(phantom_root))
        expected = [1e-3 * lr_factor(schedule, step, 4) for step in range(4)]
        assert [rates[0] for rates in seen] == pytest.approx(expected) and all(len(set(r)) == 1 for r in seen), cls
        assert trainer.lr_scheduler_configs == []
