"""The `mkdseg` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_MODEL

MKDSEG = [sys.executable, "-m", "mkdseg"]


def tiny_config(tmp_path: Path, phantom_root: Path, max_steps: int = 4) -> Path:
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_MODEL.items() if k != "image_size"}
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "val_check_interval": 2,
            "check_val_every_n_epoch": None, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path / "run"),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "run"), "name": "tiny"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/dice_ens", "mode": "max", "save_last": True}}],
        },
        "model": {"class_path": "mkdseg.methods.MKDModule", "init_args": model},
        "data": {"source": "phantom", "root": str(phantom_root), "image_size": 32, "phantom_subjects": 4,
                 "phantom_slices": 8, "batch_size": 2, "samples_per_epoch": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(MKDSEG + args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"mkdseg {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_fit_then_test_from_checkpoint(tmp_path, phantom_root):
    config = tiny_config(tmp_path, phantom_root)
    run(["fit", "--config", str(config), "--model.lambda_kd_real=0.3"], cwd=tmp_path)
    version = tmp_path / "run" / "tiny" / "version_0"
    saved = yaml.safe_load((version / "config.yaml").read_text())
    assert saved["model"]["init_args"]["lambda_kd_real"] == 0.3  # dotted override reached the model
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["image_size"] == 32 and hparams["lambda_kd_real"] == 0.3  # image_size linked from data
    metrics = list(csv.DictReader((version / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in metrics if r.get("train/loss_seg")})
    assert steps and max(steps) <= 4  # logging counts iterations, not optimizer steps
    assert any(r.get("val/dice_ens") for r in metrics)
    assert (version / "samples" / "val_step4.png").exists()
    last = version / "checkpoints" / "last.ckpt"
    assert last.exists()

    result = run(["test", "--config", str(config), "--ckpt_path", str(last),
                  "--trainer.logger.init_args.name=tiny_test"], cwd=tmp_path)
    test_dir = tmp_path / "run" / "tiny_test" / "version_0"
    summary = json.loads((test_dir / "summary.json").read_text())
    assert set(summary["dice"]) == {"ens", "syn", "real"}
    assert set(summary["dice"]["ens"]) == {"mean", "MYO", "LA", "LV", "RA", "RV", "AA", "PA"}
    rows = list(csv.DictReader((test_dir / "per_case.csv").open()))
    assert len(rows) == 3 * 2 * 7  # predictors x held-out volumes x structures
    assert (test_dir / "samples" / "test.png").exists()
    assert "test/dice_ens" in result.stdout


def test_validate_reports_ensemble_dice(tmp_path, phantom_root):
    config = tiny_config(tmp_path, phantom_root)
    result = run(["validate", "--config", str(config)], cwd=tmp_path)
    assert "val/dice_ens" in result.stdout


def test_print_config_shows_overrides_and_paper_defaults(tmp_path, phantom_root):
    config = tiny_config(tmp_path, phantom_root)
    result = run(["fit", "--config", str(config), "--model.lambda_kd_syn=0.25", "--print_config"], cwd=tmp_path)
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["init_args"]["lambda_kd_syn"] == 0.25
    assert printed["model"]["init_args"]["lambda_cyc"] == 10.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("--model.lambda_kd_real=-0.5", "model.lambda_kd_real"),
        ("--data.fold=5", "data.fold"),
        ("--data.image_size=34", "image_size=34"),
    ],
)
def test_bad_config_values_fail_at_start_naming_the_option(tmp_path, phantom_root, override, message):
    config = tiny_config(tmp_path, phantom_root)
    result = run(["fit", "--config", str(config), override], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "run" / "tiny").exists()  # nothing was trained or written


def test_unknown_option_is_rejected(tmp_path, phantom_root):
    config = tiny_config(tmp_path, phantom_root)
    result = run(["fit", "--config", str(config), "--model.lambda_kd=1"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "lambda_kd" in result.stderr


def test_no_cloud_logger_advertisement_but_lightnings_other_messages(caplog):
    import logging

    import lightning as L

    import mkdseg  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.INFO):
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert "GPU available" in caplog.text and "litlogger" not in caplog.text


def test_help_lists_the_choices_of_typed_options(capsys):
    from mkdseg.cli import main as cli_main

    for argv, listed in ((["fit", "--help"], "--data.appearance {none,gin,location_scale,class_location_scale}"),
                         (["fit", "--model.help", "mkdseg.methods.WeakToStrong"], "--model.mix {none,cutmix,classmix}"),
                         (["fit", "--model.help", "mkdseg.methods.MeanTeacher"], "--model.student_view {noise,gin}"),
                         (["fit", "--model.help", "mkdseg.methods.MKDModule"], "--model.gan_lr_decay {constant,linear}")):
        with pytest.raises(SystemExit):
            cli_main(argv)
        assert listed in capsys.readouterr().out
