"""The shipped configs parse, build, and (paper size) take 256x256 slices."""

from __future__ import annotations

import pytest
import torch

from mkdseg.cli import build_cli
from mkdseg.methods import MKDModule

from conftest import REPO, write_tiny_cache


def _build(*configs: str, tmp_path=None, extra: tuple[str, ...] = ()):
    args = []
    for c in configs:
        args += ["--config", str(REPO / "configs" / c)]
    if tmp_path is not None:
        args += [f"--trainer.default_root_dir={tmp_path}", f"--data.root={tmp_path / 'data'}"]
    return build_cli(args + list(extra), run=False)


def test_paper_config_builds_the_paper_networks_at_256(tmp_path):
    cli = _build("mkd.yaml", tmp_path=tmp_path)
    model = cli.model
    assert isinstance(model, MKDModule)
    hp = model.hparams
    assert hp.image_size == 256 and hp.gen_blocks == 9 and hp.gen_filters == 64 and hp.disc_layers == 3
    assert (hp.lambda_cyc, hp.lambda_kd_real, hp.lambda_kd_syn, hp.lr_seg) == (10.0, 0.5, 1.0, 2e-4)
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        for name in ("g_at", "g_ta"):
            assert model.network(name)(x).shape == (1, 1, 256, 256)
        for name in ("d_t", "d_a"):
            assert model.network(name)(x).shape == (1, 1, 30, 30)  # 70x70 PatchGAN on 256 px
        for name in ("s_syn", "s_real"):
            assert getattr(model, name)(x).shape == (1, 8, 256, 256)
    assert cli.datamodule.hparams.image_size == 256


@pytest.mark.parametrize(("data", "target", "assistant", "size"), [("mmwhs", "ct", "mr", 256), ("abdomen", "ct", "mri", 64)])
def test_data_configs_read_a_cache(tmp_path, data, target, assistant, size):
    write_tiny_cache(tmp_path / "data", target, assistant, size)
    cli = _build("demo.yaml" if size == 64 else "mkd.yaml", f"data/{data}.yaml", tmp_path=tmp_path)
    hp = cli.datamodule.hparams
    assert hp.source == "cache" and hp.n_folds == 2 and hp.n_val == 2 and (hp.target, hp.assistant) == (target, assistant)
    assert cli.model.spec.structures == tuple(cli.datamodule.structures)  # linked from the data
    assert cli.trainer.logger.save_dir == str(tmp_path)  # the run folder is trainer.default_root_dir


def test_no_shipped_config_pins_modality_names():
    """The cache records its roles (``mkdseg preprocess --target --assistant``): a config that named them would
    stop on a cache whose names differ (``mr`` vs ``mri``, or two MR sequences named at preprocessing)."""
    import yaml

    # configs/bench/ is exempt: each names the one dataset its recorded runs were trained on, and its text
    # is part of those runs' keys (benchmarks.reproduce reuses a finished run only for the same config)
    for path in sorted(p for p in (REPO / "configs").rglob("*.yaml") if "bench" not in p.parts):
        data = (yaml.safe_load(path.read_text()) or {}).get("data")
        assert not (isinstance(data, dict) and {"target", "assistant"} & set(data)), path


def test_demo_config_on_a_cache_takes_its_size_and_roles(tmp_path):
    """`--data.source=cache --data.root=...` after configs/demo.yaml is all a preprocessed cache needs: the data
    and the networks take the cache's slice size (here 32, not the phantom's 64) and roles."""
    write_tiny_cache(tmp_path / "data", "ct", "mri", 32)
    cli = _build("demo.yaml", tmp_path=tmp_path, extra=["--data.source=cache"])
    assert cli.datamodule.image_size == cli.model.hparams.image_size == 32
    assert (cli.datamodule.hparams.target, cli.datamodule.hparams.assistant) == ("ct", "mri")


def test_demo_config_is_cpu_sized(tmp_path):
    cli = _build("demo.yaml", tmp_path=tmp_path)
    assert cli.model.hparams.image_size == 64
    assert cli.trainer.max_steps <= 2000
    # same method hyper-parameters as the paper config (the segmentor LR is scaled for the short run)
    paper = _build("mkd.yaml", tmp_path=tmp_path).model.hparams
    for key in ("lambda_cyc", "lambda_kd_real", "lambda_kd_syn", "lr_gen", "lr_disc", "gan_mode", "seg_lr_decay", "kd_temperature"):
        assert cli.model.hparams[key] == paper[key], key


def test_translator_overlay_changes_only_the_gan_learning_rates(tmp_path):
    plain = _build("demo.yaml", tmp_path=tmp_path).model.hparams
    overlaid = _build("demo.yaml", "translator_cpu.yaml", tmp_path=tmp_path).model.hparams
    assert (overlaid.lr_gen, overlaid.lr_disc) == (4 * plain.lr_gen, 4 * plain.lr_disc) == (8e-4, 8e-4)
    assert {k: v for k, v in overlaid.items() if k not in ("lr_gen", "lr_disc")} == {
        k: v for k, v in plain.items() if k not in ("lr_gen", "lr_disc")}


def test_30min_translator_overlay_adds_the_decay_and_the_longer_run_only(tmp_path):
    plain = _build("demo.yaml", tmp_path=tmp_path)
    overlaid = _build("demo.yaml", "translator_cpu_30min.yaml", tmp_path=tmp_path)
    changed = ("lr_gen", "lr_disc", "gan_lr_decay")
    hp = overlaid.model.hparams
    assert (hp.lr_gen, hp.lr_disc, hp.gan_lr_decay) == (8e-4, 8e-4, "linear") != (
        plain.model.hparams.lr_gen, plain.model.hparams.lr_disc, plain.model.hparams.gan_lr_decay)
    assert {k: v for k, v in hp.items() if k not in changed} == {
        k: v for k, v in plain.model.hparams.items() if k not in changed}
    assert (overlaid.trainer.max_steps, plain.trainer.max_steps) == (6000, 600)


@pytest.mark.parametrize("method", ["JointTraining", "FineTune", "MKDModule"])
def test_demo_config_keeps_the_best_validation_checkpoint_of_any_method(tmp_path, phantom_root, method):
    """The README runs every method with configs/demo.yaml: its ModelCheckpoint must monitor a metric each logs."""
    build_cli([
        "fit", "--config", str(REPO / "configs" / "demo.yaml"), f"--model.class_path=mkdseg.methods.{method}",
        "--model.init_args.seg_channels=[4, 8, 16]", "--model.init_args.seg_strides=[2, 2]",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        f"--data.root={phantom_root}", "--data.image_size=32", "--data.phantom_subjects=4", "--data.phantom_slices=8",
        "--data.batch_size=2", "--data.samples_per_epoch=4",
    ])
    best = list((tmp_path / "checkpoints").glob("best-step=*.ckpt"))
    assert len(best) == 1 and best[0].name in ("best-step=2.ckpt", "best-step=4.ckpt")


def test_recipe_overlay_trains_the_recommended_recipe_on_the_few_label_split(tmp_path, phantom_root):
    """The `recipe` preset, named as `--config recipe`, after configs/demo.yaml: pseudo-labels on bidirectional
    copy-paste mixes seen through GIN, the assistant as it is, the unlabelled target subjects; a short fit runs on the
    phantom with fewer labelled subjects than the fold has."""
    from mkdseg.methods import WeakToStrong

    cli = build_cli(["--config", str(REPO / "configs/demo.yaml"), "--config", "recipe", "--trainer.logger.init_args.name=recipe",
                     f"--trainer.default_root_dir={tmp_path}", f"--data.root={phantom_root}", "--data.image_size=32",
                     "--data.phantom_subjects=4", "--data.phantom_slices=8", "--data.n_val=0", "--data.n_target=1",
                     "--data.batch_size=2", "--data.samples_per_epoch=4", "--model.seg_channels=[4, 8, 16]",
                     "--model.seg_strides=[2, 2]", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"], run=False)
    hp = cli.model.hparams
    assert isinstance(cli.model, WeakToStrong) and (hp.student_view, hp.mix, hp.mix_back) == ("gin", "cutmix", True)
    assert (cli.datamodule.hparams.appearance, cli.datamodule.hparams.unlabelled_target) == ("none", True)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2 and "1 unlabelled ct subject" in cli.datamodule.described_training()
    assert "recipe" in cli.trainer.log_dir  # the run folder carries the recipe's name
