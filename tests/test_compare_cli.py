"""`mkdseg compare`: methods trained on the same draws of the user's data, tabled, one recommended on
validation subjects only, finished runs reused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from mkdseg.compare.cli import PRESETS, compare_main, preset_names, resolve_method, stage_overrides
from mkdseg.compare.recommend import recommend
from mkdseg.data.phantom import generate_phantom

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory) -> Path:
    # 8 target subjects: 2 folds of 4, each training fold 2 validation + 1 labelled + 1 unlabelled subject
    root = tmp_path_factory.mktemp("compare_phantom")
    generate_phantom(root, n_target=8, n_assistant=4, image_size=32, n_slices=6, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny_size(tmp_path_factory) -> Path:
    """The cpu preset at the tests' network sizes: same trainer, callbacks and validation choice."""
    config = yaml.safe_load((PRESETS / "cpu.yaml").read_text())
    config["trainer"].update(max_steps=4, val_check_interval=2, log_every_n_steps=1)
    config["model"]["init_args"].update(gen_filters=4, gen_blocks=1, disc_filters=4, seg_channels=[4, 8, 16],
                                        seg_strides=[2, 2], eval_batch_size=8)
    config["data"].update(image_size=32, batch_size=2, samples_per_epoch=8)
    path = tmp_path_factory.mktemp("size") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_methods_two_draws_tabled_recommended_and_resumed(phantom_cache, tiny_size, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--cache", str(phantom_cache), "--methods", "joint", "recipe", "--n-target", "1", "--folds", "2",
            "--seeds", "1", "--size", str(tiny_size), "--steps", "4", "--out", str(out)]
    assert compare_main(argv) == 0

    rows = list(csv.DictReader((out / "n1" / "runs.csv").open()))
    assert sorted((r["method"], r["fold"]) for r in rows) == [("joint", "0"), ("joint", "1"), ("recipe", "0"), ("recipe", "1")]
    assert all(0.0 <= float(r["mean_dice"]) <= 1.0 and r["val_dice"] for r in rows)
    table = (out / "n1" / "results.md").read_text()
    assert "| joint |" in table and "| recipe |" in table and "min/run" in table
    assert (out / "n1" / "dice.png").stat().st_size > 0
    report = (out / "recommendation.md").read_text()
    val = {m: sum(float(r["val_dice"]) for r in rows if r["method"] == m) / 2 for m in ("joint", "recipe")}
    chosen = max(val, key=val.get)
    assert f"Recommended: **{chosen}**" in report
    assert f"--config {resolve_method(chosen).path}" in report and "--data.n_target=1" in report

    # again, with --final: every run is reused, and the recommended method's model is trained
    capsys.readouterr()
    assert compare_main([*argv, "--final"]) == 0
    printed = capsys.readouterr().out
    assert "4 run(s): 4 finished before, 0 to train" in printed
    best = list((out / "final" / chosen).rglob("best-step=*.ckpt"))  # validation picks its weights, as in the runs
    assert len(best) == 1 and f"mkdseg segment --ckpt {best[0]}" in printed


def test_recommendation_looks_at_validation_never_at_test():
    def run(test, val, step=4):
        return {"primary_predictor": "seg", "dice": {"seg": {"mean": test}}, "val_dice": {"seg": {"mean": val}},
                "val_step": step}

    results = {"best_on_test": [run(0.9, 0.5), run(0.9, 0.5)], "best_on_validation": [run(0.6, 0.7), run(0.6, 0.7)]}
    assert recommend(results).method == "best_on_validation"
    # a method that finished fewer draws does not compete on them
    results["fewer_draws"] = [run(0.9, 0.99)]
    assert recommend(results).method == "best_on_validation"
    # the weights a run tested are its best validation's: their validation Dice is read from its curve
    tested_best = {**run(0.5, 0.1), "best_checkpoint": "best-step=2.ckpt", "val_curve": {"step": [2, 4], "seg": [0.95, 0.1]}}
    assert recommend({"a": [tested_best], "b": [run(0.9, 0.9)]}).method == "a"


def test_a_staged_method_gets_the_budget_for_each_stage():
    assert stage_overrides(resolve_method("finetune"), 100) == ["--model.init_args.pretrain_steps=100", "--trainer.max_steps=200"]
    assert stage_overrides(resolve_method("joint"), 100) == ["--trainer.max_steps=100"]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "missing.yaml"], "no such method config missing.yaml"),
    (["--n-target", "0"], "--n-target: expected positive integers or 'all'"),
    (["--methods", "joint", "--reference", "recipe"], "--reference 'recipe' is not among --methods"),
    (["--folds", "3"], "--folds 3"),
    (["--set", "trainer.max_steps"], "--set expects KEY=VALUE"),
    (["--size", "huge"], "--size: unknown preset 'huge'"),
])
def test_bad_options_name_the_option(extra, message, tmp_path, capsys, phantom_cache):
    with pytest.raises(SystemExit) as exit_info:
        compare_main(["--cache", str(phantom_cache), "--out", str(tmp_path / "cmp"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()  # nothing written for a refused command


def test_a_missing_cache_without_datasets_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_main(["--cache", str(tmp_path / "nothing"), "--out", str(tmp_path / "cmp")])
    assert f"--cache {tmp_path / 'nothing'} holds no slice cache" in capsys.readouterr().err


def test_every_method_preset_and_the_recipe_overlay_agree():
    """configs/recipe.yaml is the preset `recipe` plus a run name: the two must not drift apart."""
    overlay = yaml.safe_load((REPO / "configs" / "recipe.yaml").read_text())
    preset = yaml.safe_load((PRESETS / "methods" / "recipe.yaml").read_text())
    assert overlay["model"] == preset["model"] and overlay["data"] == preset["data"]
    for path in sorted((PRESETS / "methods").glob("*.yaml")):
        stage_overrides(resolve_method(path.stem), 10)  # its class imports


@pytest.mark.parametrize("name", preset_names())
def test_every_method_preset_builds_with_the_cpu_size(name, phantom_cache, tmp_path):
    """The preset after the cpu size config, as `compare` runs it: jsonargparse keeps the size options the
    method's class takes and drops the others (a segmentor-only method has no generator)."""
    import sys

    from mkdseg.cli import build_cli

    method = resolve_method(name)
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = build_cli(["--config", str(PRESETS / "cpu.yaml"), "--config", str(method.path), f"--data.root={phantom_cache}",
                         "--data.image_size=32", "--data.n_target=1", f"--trainer.default_root_dir={tmp_path}",
                         *stage_overrides(method, 10)], run=False)
    finally:
        sys.argv = argv
    assert type(cli.model).__name__ == method.config["model"]["class_path"].rsplit(".", 1)[1]
    assert cli.trainer.max_steps == (20 if any(k in cli.model.hparams for k in ("pretrain_steps", "translation_steps")) else 10)


def test_a_runs_folder_is_fixed_when_the_study_plans_it(tmp_path):
    """A config edited while a study trains (a preset changed mid-study) must not move a run's folder: its
    config.yaml and logs in one folder, its result.json in another (seen on 2026-12-05)."""
    import pickle

    from mkdseg.compare.runs import RunSpec

    config = tmp_path / "size.yaml"
    config.write_text("data:\n  image_size: 64\n")
    spec = RunSpec("joint", (config,), ("--data.n_target=2",), 0, 0, tmp_path / "runs", 10)
    planned = spec.dir
    shipped = pickle.loads(pickle.dumps(spec))  # as a worker process receives it
    config.write_text("data:\n  image_size: 128\n")
    assert spec.dir == planned and spec.result_path.parent == planned and shipped.dir == planned
    assert RunSpec("joint", (config,), ("--data.n_target=2",), 0, 0, tmp_path / "runs", 10).dir != planned  # a new plan sees the edit


def test_the_datasets_options_of_preprocess_reach_it(tmp_path, monkeypatch):
    """Two sequences of one modality (both datasets say MRI): compare takes the names preprocess takes."""
    import mkdseg.data.prepare as prepare
    from mkdseg.compare.cli import build_parser, prepare_cache

    seen = []
    monkeypatch.setattr(prepare, "preprocess_main", lambda argv: seen.append(argv) or 0)
    args = build_parser().parse_args(["--target", "t2", "--assistant", "t1", "--target-modality", "t2",
                                      "--assistant-modality", "t1", "--target-orientation", "LAS", "--out", str(tmp_path)])
    prepare_cache(args, {"data": {"image_size": 64}})
    argv = seen[0]
    for option, value in (("--target-modality", "t2"), ("--assistant-modality", "t1"), ("--target-orientation", "LAS"),
                          ("--image-size", "64")):
        assert argv[argv.index(option) + 1] == value
    assert "--assistant-orientation" not in argv
