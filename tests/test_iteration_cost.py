"""benchmarks/iteration_cost.py: the product's own iteration (built by mkdseg.training.build_cli, trained by Lightning)
timed at a tiny size, so it cannot rot."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import TINY_MODEL

from benchmarks import iteration_cost

#: the tests' phantom and cpu-preset runs at 32 px, uncompiled (compiling costs seconds at any size)
TINY_PRESET_RUN = ["--phantom", "--n-target", "1", "--data.image_size=32", "--model.init_args.compile=false"]


def test_presets_are_timed_through_the_products_fit_and_compared_with_the_first(tmp_path):
    out = tmp_path / "cost"
    assert iteration_cost.main(["--methods", "joint", "recipe", "--steps", "2", "--rounds", "1", *TINY_PRESET_RUN,
                                "--out", str(out)]) == 0
    written = json.loads((out / "results.json").read_text())
    assert written["settings"]["joint"] == ["--config", "cpu", "--config", "joint"]
    joint, recipe = written["summary"]["joint"], written["summary"]["recipe"]
    assert joint["vs_reference"] == 1.0 and joint["iterations_timed"] == recipe["iterations_timed"] == 2
    # the presets' own data ran: joint's batch is 2 target + 2 assistant slices, the recipe's adds 2 unlabelled target
    assert joint["images_per_iteration"] == 4 and recipe["images_per_iteration"] == 6
    for s in (joint, recipe):
        assert s["wall_s"] > 0 and s["cpu_s"] > 0 and s["step_s"] > 0 and s["data_s"] > 0 and s["peak_gib"] is None
        # the step is Lightning's run_training_batch, inside the iteration; the rest is the loop's
        assert s["step_s"] + s["data_s"] <= s["wall_s"] * 1.001
    table = (out / "results.md").read_text()
    assert "| joint | " in table and "| 1.00 |" in table and "| recipe | " in table


def test_an_mkd_config_of_its_own_runs_its_manual_iteration_with_channels_last_weights(tmp_path, phantom_root):
    """configs/demo.yaml (MKD: six optimizers stepped inside its training_step) at the tests' sizes."""
    tiny = [f"--data.root={phantom_root}", "--data.image_size=32", "--data.phantom_subjects=4", "--data.phantom_slices=8",
            "--data.batch_size=2", "--data.samples_per_epoch=8", "--model.init_args.seg_channels=[4, 8, 16]",
            "--model.init_args.seg_strides=[2, 2]",
            *(f"--model.init_args.{k}={TINY_MODEL[k]}" for k in ("gen_filters", "gen_blocks", "disc_filters", "pool_size"))]
    out = tmp_path / "cost"
    assert iteration_cost.main(["--configs", "configs/demo.yaml", "--steps", "2", "--skip", "1", "--rounds", "1",
                                "--channels-last", *tiny, "--out", str(out)]) == 0
    demo = json.loads((out / "results.json").read_text())["summary"]["demo"]
    assert demo["iterations_timed"] == 2 and demo["images_per_iteration"] == 4 and demo["params"] > 0
    assert 0 < demo["step_s"] < demo["wall_s"]


def test_a_studys_rows_carry_their_overrides_into_the_products_parser(tmp_path):
    """Each row of a study is its method preset with the row's overrides, as compare trains it; joint is the reference.
    Checked on the parsed model (the timing itself is the test above)."""
    from mkdseg.training import build_cli

    args = argparse.Namespace(configs=None, methods=None, study="recipe_ablation", size="cpu")
    settings = iteration_cost.settings_of(args)
    assert list(settings)[:3] == ["joint", "Recipe (BCP, no GIN on the assistant)", "w/o the way back (one mixed batch)"]
    row = settings["w/o the way back (one mixed batch)"]
    assert row[:4] == ["--config", "cpu", "--config", "bcp"] and "--model.init_args.mix_back=false" in row
    data = iteration_cost.data_arguments(argparse.Namespace(phantom=True, n_target=1, root=None))
    cli = build_cli([*row, *data, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.hparams.mix_back is False and cli.datamodule.hparams.appearance == "none"
    # self-training is timed in its pseudo-labelling rounds, not in its first (labelled slices only)
    assert "--model.init_args.round_steps=1" in iteration_cost.method_arguments("cpu", "selftrain")
    assert "--model.init_args.round_steps=1" not in iteration_cost.method_arguments("cpu", "bcp")


def test_a_reference_that_is_no_setting_is_refused(capsys):
    with pytest.raises(SystemExit):
        iteration_cost.main(["--methods", "joint", "--reference", "recipe", *TINY_PRESET_RUN])
    assert "--reference 'recipe' is none of the settings ['joint']" in capsys.readouterr().err
