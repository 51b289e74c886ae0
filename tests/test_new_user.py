"""Tried as a new user: two nnU-Net datasets -> `mkdseg preprocess` with its defaults -> `mkdseg fit` with
configs/demo.yaml on the cache, naming neither the modalities nor the slice size a second time.

The commands run in-process (the `mkdseg` entry point, and the CLI that `mkdseg fit` builds), on toy datasets of three
scans each. Training itself runs end to end in the README's test (tests/test_readme.py).
"""

from __future__ import annotations


from mkdseg.cli import build_cli, main
from mkdseg.data.cache import SliceCache

from conftest import REPO
from test_any_anatomy import CT_LABELS, LAS, LPS, MR_LABELS, make_dataset

DEMO = str(REPO / "configs" / "demo.yaml")
TINY = ["--model.init_args.gen_filters=4", "--model.init_args.gen_blocks=1", "--model.init_args.disc_filters=4",
        "--model.init_args.seg_channels=[4, 8, 16]", "--model.init_args.seg_strides=[2, 2]", "--data.batch_size=2",
        "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"]


def test_preprocess_defaults_then_fit_the_demo_config_on_the_cache(tmp_path, capsys):
    ct = make_dataset(tmp_path / "ct", "CT", CT_LABELS, LPS, "Liver", "left_kidney")
    mr = make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney")
    cache_dir = tmp_path / "cache"
    assert main(["preprocess", "--target", str(ct), "--assistant", str(mr), "--out", str(cache_dir), "--no-progress"]) == 0
    assert "--data.root=" in capsys.readouterr().out  # it says how to train on it
    cache = SliceCache(cache_dir)
    assert cache.roles == {"target": "ct", "assistant": "mri"} and cache.image_size == 256  # the paper's size

    cli = build_cli(["--config", DEMO, "--data.source=cache", f"--data.root={cache_dir}",
                     f"--trainer.default_root_dir={tmp_path / 'run'}", *TINY], run=False)
    hparams = cli.model.hparams  # what the checkpoint records, and `mkdseg segment` reads
    assert hparams["image_size"] == 256  # the networks take the cache's size
    assert hparams["data_spec"]["modality"] == "ct" and hparams["data_spec"]["structures"] == ["left_kidney", "Liver"]


def test_two_sequences_of_one_modality_are_named_once_at_preprocessing(tmp_path):
    """bSSFP -> LGE cardiac MR: both datasets say MRI, so preprocessing needs names for them; the cache
    records which is the target, so `fit`/`test` need no --data.target/--data.assistant."""
    bssfp = make_dataset(tmp_path / "bssfp", "MRI", MR_LABELS, LAS, "liver", "left kidney", n_cases=2)
    lge = make_dataset(tmp_path / "lge", "MRI", MR_LABELS, LAS, "liver", "left kidney", n_cases=2)
    cache_dir = tmp_path / "cache"
    assert main(["preprocess", "--target", str(lge), "--assistant", str(bssfp), "--target-modality", "LGE",
                 "--assistant-modality", "bSSFP", "--image-size", "32", "--out", str(cache_dir), "--no-progress"]) == 0
    cli = build_cli(["--config", DEMO, "--data.source=cache", f"--data.root={cache_dir}",
                     f"--trainer.default_root_dir={tmp_path / 'run'}", *TINY], run=False)
    dm = cli.datamodule
    assert (dm.hparams.target, dm.hparams.assistant, dm.image_size, cli.model.hparams.image_size) == ("lge", "bssfp", 32, 32)
    dm.setup("fit")
    assert "lge" in dm.described_training() and "bssfp" in dm.described_training()
