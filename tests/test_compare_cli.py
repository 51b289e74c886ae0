"""`mkdseg compare`: methods trained on the same draws of the user's data, tabled, one recommended on
validation subjects only, finished runs reused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mkdseg.compare.cli import compare_main
from mkdseg.compare.configs import resolve_method, stage_overrides
from mkdseg.compare.recommend import recommend
from mkdseg.compare.studies import study_names
from mkdseg.data.phantom import generate_phantom
from mkdseg.presets import PRESETS, method_names

from conftest import cli_options, write_tiny_cache

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
    # uncompiled: inductor's code generation would be most of these seconds-long runs (compiling: test_precision.py)
    config["model"]["init_args"].update(gen_filters=4, gen_blocks=1, disc_filters=4, seg_channels=[4, 8, 16],
                                        seg_strides=[2, 2], eval_batch_size=8, compile=False)
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
    assert f"--config {tiny_size} --config {chosen} " in report and "--data.n_target=1" in report  # presets by name

    # the record of finished runs is finished_runs.jsonl: with the run folders gone, the same tables come from it
    index = [json.loads(line) for line in (out / "finished_runs.jsonl").read_text().splitlines()]
    assert sorted((r["config"], r["fold"]) for r in index) == [("joint", 0), ("joint", 1), ("recipe", 0), ("recipe", 1)]
    import shutil

    shutil.rmtree(out / "runs")
    assert compare_main([*argv, "--report-only"]) == 0
    assert (out / "n1" / "results.md").read_text() == table

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


def test_the_recommendation_says_whether_every_folds_validation_prefers_it():
    """Seeds share their fold's validation subjects: a mean over draws can be carried by one fold. The choice
    carries the runner-up and the per-fold margin, and says "tied" when the folds disagree."""
    from mkdseg.compare.report import separation_note

    def run(fold, seed, val):
        return {"fold": fold, "seed": seed, "primary_predictor": "seg", "dice": {"seg": {"mean": 0.5}},
                "val_dice": {"seg": {"mean": val}}, "val_step": 4}

    one_fold_carries = {"a": [run(0, 0, 0.70), run(0, 1, 0.70), run(1, 0, 0.90), run(1, 1, 0.90)],
                        "b": [run(0, 0, 0.75), run(0, 1, 0.73), run(1, 0, 0.80), run(1, 1, 0.80)]}
    choice = recommend(one_fold_carries)
    assert (choice.method, choice.runner_up) == ("a", "b") and not choice.separated
    assert choice.fold_margins == pytest.approx({0: -0.04, 1: 0.10})
    assert "does not separate" in separation_note(choice) and "-4.00 in fold 0" in separation_note(choice)

    both_folds = {"a": one_fold_carries["a"], "b": [run(0, 0, 0.60), run(0, 1, 0.65), run(1, 0, 0.80), run(1, 1, 0.85)]}
    choice = recommend(both_folds)
    assert choice.separated and "every fold prefers it" in separation_note(choice)
    assert recommend({"a": one_fold_carries["a"]}).runner_up is None  # nothing to separate from


def test_a_staged_method_gets_the_budget_for_each_stage():
    assert stage_overrides(resolve_method("finetune"), 100) == ["--model.init_args.pretrain_steps=100", "--trainer.max_steps=200"]
    assert stage_overrides(resolve_method("joint"), 100) == ["--trainer.max_steps=100"]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "missing.yaml"], "no such method config missing.yaml"),
    (["--n-target", "0"], "--n-target: expected positive integers or 'all'"),
    (["--methods", "joint", "--reference", "recipe"], "--reference 'recipe' is none of the rows"),
    (["--study", "nosuch"], "--study: unknown study 'nosuch'"),
    (["--study", "table1", "--methods", "joint"], "--study and --methods"),
    (["--folds", "3"], "--folds 3"),
    (["--set", "trainer.max_steps"], "--set expects KEY=VALUE"),
    (["--size", "huge"], "--size: unknown preset 'huge'"),
    (["--minutes", "5", "--steps", "100"], "--minutes and --steps"),
    (["--minutes", "0"], "--minutes must be > 0"),
    (["--methods", "finetune", "--minutes", "5"], "--minutes: finetune trains in two stages"),
    (["--slurm-gpus", "1"], "--slurm-gpus is for --launcher slurm"),
    (["--slurm-arg=--account=lab"], "--slurm-arg is for --launcher slurm"),
    (["--launcher", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be >= 1"),
    (["--launcher", "slurm", "--slurm-poll", "0"], "--slurm-poll must be > 0"),
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


def test_every_method_preset_names_a_method_class_that_imports():
    for path in sorted((PRESETS / "methods").glob("*.yaml")):
        overrides = stage_overrides(resolve_method(path.stem), 10)  # imports the preset's model class
        assert overrides[-1] in ("--trainer.max_steps=10", "--trainer.max_steps=20"), (path.stem, overrides)


@pytest.mark.parametrize("name", method_names())
def test_every_method_preset_builds_with_the_cpu_size(name, phantom_cache, tmp_path):
    """The preset after the cpu size config, as `compare` runs it: jsonargparse keeps the size options the
    method's class takes and drops the others (a segmentor-only method has no generator)."""
    from mkdseg.cli import build_cli

    method = resolve_method(name)
    cli = build_cli(["--config", "cpu", "--config", name, f"--data.root={phantom_cache}", "--data.image_size=32",
                     "--data.n_target=1", f"--trainer.default_root_dir={tmp_path}", *stage_overrides(method, 10)], run=False)
    assert type(cli.model).__name__ == method.config["model"]["class_path"].rsplit(".", 1)[1]
    assert cli.trainer.max_steps == (20 if any(k in cli.model.hparams for k in ("pretrain_steps", "translation_steps")) else 10)


def test_the_recipe_is_the_configuration_its_study_measured(phantom_cache, tmp_path):
    """`recipe_ablation` measures the recipe as `bcp` with data.appearance=none (to share `bcp_ablation`'s runs):
    the `recipe` preset a user trains must resolve to exactly that configuration, and to a different one than `bcp`."""
    from mkdseg.cli import build_cli

    def resolved(*args: str) -> dict:
        cli = build_cli(["--config", "cpu", *args, f"--data.root={phantom_cache}", "--data.image_size=32", "--data.n_target=1",
                         f"--trainer.default_root_dir={tmp_path}"], run=False)
        config = cli.config.as_dict()
        config.pop("config")  # the config files' paths
        return config

    recipe = resolved("--config", "recipe")
    assert recipe == resolved("--config", "bcp", "--data.appearance=none")
    assert recipe != resolved("--config", "bcp")


def test_a_runs_folder_is_fixed_when_the_study_plans_it(tmp_path):
    """A config edited while a study trains (a preset changed mid-study) must not move a run's folder: its
    config.yaml and logs in one folder, its result.json in another."""
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


def test_a_comment_in_a_config_leaves_its_runs_key_alone(tmp_path):
    """The key hashes what the configs say: a preset's comment can be reworded without orphaning its finished runs."""
    from mkdseg.compare.runs import RunSpec

    config = tmp_path / "method.yaml"

    def key(text: str) -> str:
        config.write_text(text)
        return RunSpec("recipe", (config,), ("--data.n_target=2",), 0, 0, tmp_path / "runs", 10).key

    plain = key("model:\n  init_args:\n    mix: cutmix\n")
    assert key("# BCP, reworded\nmodel:\n  init_args:\n    mix: cutmix   # a box\n") == plain
    assert key("model:\n  init_args:\n    mix: classmix\n") != plain


def test_the_datasets_options_of_preprocess_reach_it(tmp_path, monkeypatch):
    """Two sequences of one modality (both datasets say MRI): compare takes the names preprocess takes."""
    import mkdseg.compare.cache
    from mkdseg.compare.cache import prepare_cache
    from mkdseg.compare.cli import build_parser

    seen = []

    def preprocess_nnunet(target, assistant, out, **options):
        seen.append((target, assistant, out, options))
        return write_tiny_cache(out)

    monkeypatch.setattr(mkdseg.compare.cache, "preprocess_nnunet", preprocess_nnunet)
    args = build_parser().parse_args(["--target", "t2", "--assistant", "t1", "--target-modality", "t2",
                                      "--assistant-modality", "t1", "--target-orientation", "LAS", "--out", str(tmp_path)])
    assert prepare_cache(args, 64) == tmp_path.resolve() / "cache"
    assert seen == [(Path("t2"), Path("t1"), tmp_path.resolve() / "cache",
                     {"target_modality": "t2", "assistant_modality": "t1", "target_orientation": "LAS",
                      "image_size": 64, "progress": False})]  # no assistant_orientation: preprocess's default


def test_a_study_tables_its_rows_sharing_runs_between_predictors(phantom_cache, tiny_size, tmp_path):
    """Rows of one method and overrides share its runs (MKD's three predictors); a row's overrides are other runs;
    the paper's column appears; the reference is the study's."""
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "title": "Tiny study", "reference": "Joint", "paper_column": "Paper (toy)",
        "rows": [{"label": "Joint", "method": "joint", "paper": 50.0},
                 {"label": "MKD S_syn", "method": "mkd", "predictor": "syn"},
                 {"label": "MKD ensemble", "method": "mkd", "predictor": "ens"},
                 {"label": "MKD w/o KD", "method": "mkd", "predictor": "ens",
                  "set": {"model.init_args.lambda_kd_real": 0.0, "model.init_args.lambda_kd_syn": 0.0}}]}))
    out = tmp_path / "cmp"
    assert compare_main(["--cache", str(phantom_cache), "--study", str(study), "--n-target", "1", "--folds", "1",
                         "--seeds", "1", "--size", str(tiny_size), "--steps", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "n1" / "runs.csv").open()))
    assert [(r["method"], r["predictor"]) for r in rows] == [("Joint", "seg"), ("MKD S_syn", "syn"),
                                                            ("MKD ensemble", "ens"), ("MKD w/o KD", "ens")]
    assert rows[1]["run_dir"] == rows[2]["run_dir"] != rows[3]["run_dir"]  # 3 runs for 4 rows
    assert len(list((out / "runs").glob("*/fold0-seed0/result.json"))) == 3
    configs = {r["method"]: yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text()) for r in rows}
    assert configs["MKD w/o KD"]["model"]["init_args"]["lambda_kd_real"] == 0.0
    assert configs["MKD ensemble"]["model"]["init_args"]["lambda_kd_real"] == 0.5
    table = (out / "n1" / "results.md").read_text()
    assert "# Tiny study: 1 labelled" in table and "Paper (toy)" in table and "vs Joint, paired" in table
    assert "| 50.00 |" in table


@pytest.mark.parametrize("name", study_names())
def test_every_shipped_study_names_presets_predictors_and_options_that_exist(name):
    from mkdseg.compare.studies import load_study
    from mkdseg.data import UnpairedSliceDataModule

    study = load_study(name)
    for row in study.rows:
        method = resolve_method(row.method)  # raises for an unknown preset
        assert row.predictor in (None, "seg", "syn", "real", "ens", "teacher"), row
        assert yaml.safe_load(method.path.read_text())["model"]["class_path"].startswith("mkdseg.methods.")
        known = {"model.init_args": set(cli_options(method.model_class)), "data": set(cli_options(UnpairedSliceDataModule))}
        for override in row.overrides:  # a misspelt option would fail every run of the row, after the planning
            group, _, option = override.removeprefix("--").partition("=")[0].rpartition(".")
            assert option in known.get(group, ()), f"{name}: {row.label}: unknown option {override}"


@pytest.mark.parametrize("text, message", [
    ("rows: []", "non-empty list `rows`"),
    ("rows: [{label: a}]", "rows[0]: `method` must be a non-empty string"),
    ("rows: [{label: a, method: joint, colour: red}]", "rows[0]: unknown key(s) ['colour']"),
    ("rows: [{label: a, method: joint}, {label: a, method: mkd}]", "row labels must differ"),
    ("reference: b\nrows: [{label: a, method: joint}]", "reference 'b' is none of the rows' labels"),
    ("rows: [{label: a, method: joint, set: [1]}]", "rows[0]: `set` maps dotted"),
    ("rows: [{label: a, method: joint, paper: high}]", "rows[0]: `paper` must be a number"),
    ("rows: [{label: a, method: joint}\n", "not valid YAML"),
])
def test_a_bad_study_file_names_the_file_and_the_row(text, message, tmp_path):
    from mkdseg.compare.studies import load_study

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_study(str(path))
    assert str(path) in str(error.value) and message in str(error.value)


def _tiny(phantom_cache, tiny_size, out, *extra):
    return ["--cache", str(phantom_cache), "--n-target", "1", "--folds", "1", "--seeds", "1", "--size", str(tiny_size),
            "--out", str(out), *extra]


def test_equal_minutes_give_each_method_the_iterations_its_cost_buys_and_repeat(phantom_cache, tiny_size, tmp_path,
                                                                               capsys):
    from mkdseg.compare.budget import VALIDATIONS_PER_RUN, iterations_for

    out = tmp_path / "cmp"
    argv = _tiny(phantom_cache, tiny_size, out, "--methods", "joint", "recipe", "--minutes", "0.02", "--threads", "1")
    assert compare_main(argv) == 0
    costs = json.loads((out / "iteration_costs.json").read_text())
    assert sorted(key.split("-")[0] for key in costs) == ["joint", "recipe"]
    per_iteration = {key.split("-")[0]: entry["cpu_s_per_iteration"] for key, entry in costs.items()}
    assert per_iteration["recipe"] > per_iteration["joint"]  # a teacher, two more student batches, re-styling
    rows = {r["method"]: r for r in csv.DictReader((out / "n1" / "runs.csv").open())}
    for method, row in rows.items():
        steps = iterations_for(0.02, per_iteration[method])
        assert int(row["global_step"]) == steps
        assert [int(s.split(":")[0]) for s in row["val_curve"].split()] == [
            steps // VALIDATIONS_PER_RUN * k for k in range(1, VALIDATIONS_PER_RUN + 1)]  # the last at the end
        assert float(row["fit_cpu_s"]) > 0
    assert int(rows["recipe"]["global_step"]) <= int(rows["joint"]["global_step"])
    assert "0.02 CPU-minutes of training per run" in (out / "recommendation.md").read_text()
    capsys.readouterr()
    assert compare_main(argv) == 0  # the costs are read, not measured again: the same runs, reused
    printed = capsys.readouterr().out
    assert "2 run(s): 2 finished before, 0 to train" in printed and "measuring" not in printed


def test_best_validation_weights_are_tested_and_the_final_ones_kept(phantom_cache, tiny_size, tmp_path):
    """MKD (six optimizers, manual steps): the weights of the best validation are tested, the final weights' test kept."""
    out = tmp_path / "cmp"
    assert compare_main(_tiny(phantom_cache, tiny_size, out, "--methods", "mkd", "--steps", "6",
                              "--set", "model.init_args.lr_seg=5.0")) == 0
    path = next((out / "runs").glob("mkd-*/fold0-seed0/result.json"))
    result = json.loads(path.read_text())
    curve = result["val_curve"]
    best = int(np.argmax(curve["ens"]))
    assert curve["step"] == [2, 4, 6] and set(curve) == {"step", "syn", "real", "ens"}
    assert result["tested_weights"] == "best validation"
    assert result["best_val_dice"] == pytest.approx(max(curve["ens"]), rel=1e-5)
    assert result["best_checkpoint"] == f"best-step={curve['step'][best]}.ckpt"
    # lr_seg 5 makes these 6 steps erratic, so that the best validation is not the last one and the two tests differ
    assert curve["step"][best] != curve["step"][-1]
    assert result["dice"]["ens"]["mean"] != pytest.approx(result["dice_last"]["ens"]["mean"], rel=1e-6)
    row = next(csv.DictReader((out / "n1" / "runs.csv").open()))
    assert row["val_step"] == str(curve["step"][best])  # what the recommendation sees: the tested weights
    assert float(row["val_dice"]) == pytest.approx(curve["ens"][best], rel=1e-5)
    assert float(row["mean_dice_last"]) == pytest.approx(result["dice_last"]["ens"]["mean"], rel=1e-5)


def test_parallel_jobs_give_the_same_results_as_one_process_and_a_failure_stops_no_other(phantom_cache, tiny_size,
                                                                                         tmp_path):
    broken = tmp_path / "broken.yaml"  # seg_strides too few for the channel levels: the U-Net refuses to build
    broken.write_text(yaml.safe_dump({"model": {"class_path": "mkdseg.methods.JointTraining",
                                                "init_args": {"seg_strides": [2]}}}))
    import torch

    common = ["--steps", "2", "--threads", "1", "--methods", "baseline", "joint", str(broken)]
    assert compare_main(_tiny(phantom_cache, tiny_size, tmp_path / "p", *common, "--jobs", "2")) == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # serial runs train in this process: --threads holds for them too, and is undone after
    try:
        assert compare_main(_tiny(phantom_cache, tiny_size, tmp_path / "s", *common)) == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)

    def results(out):
        return {p.parent.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/fold0-seed0/result.json")}

    parallel, serial = results(tmp_path / "p"), results(tmp_path / "s")
    assert sorted(parallel) == sorted(serial) and len(parallel) == 2
    for key, result in parallel.items():
        assert result["torch_threads"] == serial[key]["torch_threads"] == 1 and result["global_step"] == 2
        assert result["dice"] == serial[key]["dice"]  # same seed, same thread count: the same numbers
    error = next((tmp_path / "p" / "runs").glob("broken-*/fold0-seed0/error.txt")).read_text()
    assert "Traceback" in error
    assert "| baseline |" in (tmp_path / "p" / "n1" / "results.md").read_text()


def test_an_unfinished_run_is_redone(phantom_cache, tiny_size, tmp_path, monkeypatch):
    calls = []

    def fake_run(spec):
        calls.append(spec.name)
        if spec.name == "baseline" and len(calls) == 1:
            spec.dir.mkdir(parents=True)  # a run stopped half-way: a folder without result.json
            raise RuntimeError("stopped")
        spec.dir.mkdir(parents=True, exist_ok=True)
        result = {"config": spec.name, "key": spec.key, "fold": 0, "seed": 0, "primary_predictor": "seg",
                  "global_step": 2, "fit_s": 0.0, "dice": {"seg": {"mean": 0.5}}, "val_dice": {"seg": {"mean": 0.5}}}
        spec.result_path.write_text(json.dumps(result))
        return result

    monkeypatch.setattr("mkdseg.compare.runs.run_one", fake_run)
    argv = _tiny(phantom_cache, tiny_size, tmp_path / "cmp", "--methods", "baseline", "joint")
    assert compare_main(argv) == 1 and calls == ["baseline", "joint"]
    assert compare_main(argv) == 0 and calls[2:] == ["baseline"]  # only the unfinished run again


def test_comparing_without_validation_subjects_is_refused_by_name(phantom_cache, tiny_size, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_main(_tiny(phantom_cache, tiny_size, tmp_path / "cmp", "--methods", "baseline", "--steps", "2",
                           "--set", "data.n_val=0"))
    assert exit_info.value.code == 2 and "data.n_val must be > 0" in capsys.readouterr().err


def test_paired_difference_matches_draws_by_fold_and_seed():
    from mkdseg.compare.tables import paired_difference

    def run(fold, seed, mean, predictor="seg"):
        return {"fold": fold, "seed": seed, "dice": {predictor: {"mean": mean}}}

    baseline = [run(0, 0, 0.40), run(0, 1, 0.50), run(1, 0, 0.30)]
    method = [run(0, 1, 0.55, "ens"), run(0, 0, 0.38, "ens"), run(1, 0, 0.45, "ens"), run(1, 1, 0.90, "ens")]
    mean, better, compared = paired_difference(method, "ens", baseline, "seg")
    # (1,1) has no baseline draw and is left out; the others pair by (fold, seed), not by position
    assert compared == 3 and better == 2
    assert mean == pytest.approx((0.05 - 0.02 + 0.15) / 3)
    assert paired_difference(method, "ens", [], "seg") is None


def test_a_corrupt_run_index_names_its_line(tmp_path):
    from mkdseg.compare.runs import RunIndex

    path = tmp_path / "finished_runs.jsonl"
    path.write_text('{"key": "joint-1", "fold": 0, "seed": 0}\n{"key": "joint-1"\n')
    with pytest.raises(ValueError, match=f"{path}:2: not a finished run"):
        RunIndex(path)
