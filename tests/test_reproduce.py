"""The paper-reproduction harness: config composition, studies, and a tiny study end to end."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, TINY_MODEL, write_tiny_cache
from mkdseg.labels import MMWHS

MMWHS_NAMES = tuple(name for name, _ in MMWHS)

sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level package of the repository, not of mkdseg
from benchmarks import reproduce  # noqa: E402
from benchmarks.reproduce import compose, make_study, main  # noqa: E402

BENCH = REPO / "configs" / "bench"
BASES = ("base", "mmwhs", "abdomen")  # the harness's base configs; the other yamls are methods
METHOD_CONFIGS = sorted(p.stem for p in BENCH.glob("*.yaml") if p.stem not in BASES)


def tiny_config_dir(tmp_path: Path, phantom_root: Path) -> Path:
    """configs/bench's method yamls with a tiny base: 2 iterations on the 32-px test phantom."""
    folder = tmp_path / "configs"
    folder.mkdir()
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MODEL.items() if k != "image_size"}
    base = yaml.safe_load((BENCH / "base.yaml").read_text())
    base["trainer"].update(max_steps=2, log_every_n_steps=1)
    base["model"]["init_args"] = model
    base["data"].update(root=str(phantom_root), image_size=32, phantom_subjects=4, phantom_slices=8, batch_size=2, samples_per_epoch=4)
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    for name in METHOD_CONFIGS:
        (folder / f"{name}.yaml").write_text((BENCH / f"{name}.yaml").read_text())
    return folder


def test_tiny_study_writes_table_csv_and_chart_and_skips_finished_runs(tmp_path, phantom_root, monkeypatch):
    configs, out, runs = tiny_config_dir(tmp_path, phantom_root), tmp_path / "out", tmp_path / "runs"
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(out),
            "--runs-dir", str(runs), "--methods", "baseline", "mkd"]
    assert main(args) == 0

    results = sorted(runs.glob("*/fold0-seed0/result.json"))
    assert [p.parent.parent.name.split("-")[0] for p in results] == ["baseline", "mkd"]
    for path in results:
        result = json.loads(path.read_text())
        assert result["global_step"] == 2 and result["fold"] == 0 and result["seed"] == 0
        assert 0 <= result["dice"][result["primary_predictor"]]["mean"] <= 1
        assert (path.parent / "config.yaml").exists() and (path.parent / "logs" / "metrics.csv").exists()
        assert "val_dice" not in result  # data.n_val: 0, so nothing was validated

    table = (out / "results.md").read_text()
    for label in ("Baseline (target only)", "MKD: S_syn", "MKD: S_real", "MKD: ensemble"):
        assert f"| {label} | " in table
    assert "Fine-tune" not in table  # --methods filtered it out
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert header.split(" | ")[1:10] == ["Mean Dice", "vs baseline, paired", "MYO", "LA", "LV", "RA", "RV", "AA", "PA"]
    ens_row = next(line for line in table.splitlines() if line.startswith("| MKD: ensemble"))
    paired = 100 * (json.loads(results[1].read_text())["dice"]["ens"]["mean"] - json.loads(results[0].read_text())["dice"]["seg"]["mean"])
    assert ens_row.split(" | ")[2] == f"{paired:+.2f} ({int(paired > 0)} of 1 better)"
    assert "± 0.00" in table and "90.12" in table  # one run per row; the paper's number alongside

    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["config"], r["predictor"]) for r in rows] == [("baseline", "seg"), ("mkd", "syn"), ("mkd", "real"), ("mkd", "ens")]
    mkd = json.loads(results[1].read_text())
    assert float(rows[3]["mean_dice"]) == pytest.approx(mkd["dice"]["ens"]["mean"], rel=1e-5)
    assert (out / "dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second invocation trains nothing and reports the same table
    mtimes = [p.stat().st_mtime_ns for p in results]

    def must_not_run(spec):
        raise AssertionError(f"finished run {spec.dir} was run again")

    monkeypatch.setattr("mkdseg.compare.runs.run_one", must_not_run)
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in results] == mtimes
    assert (out / "results.md").read_text().split("\n\n")[1] == table.split("\n\n")[1]
    assert "0 run(s) trained, 2 reused" in (out / "results.md").read_text()


def test_a_run_records_its_last_validation_for_choosing_among_runs(tmp_path, phantom_root):
    configs, out, runs = tiny_config_dir(tmp_path, phantom_root), tmp_path / "out", tmp_path / "runs"
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(out), "--runs-dir",
            str(runs), "--methods", "mkd", "--steps", "4", "--set", "trainer.val_check_interval=2", "--set", "data.n_val=1"]
    assert main(args) == 0
    path = next(runs.glob("mkd-*/fold0-seed0/result.json"))
    result = json.loads(path.read_text())
    assert result["val_step"] == 4 and set(result["val_dice"]) == {"syn", "real", "ens"}
    logged = [r for r in csv.DictReader((path.parent / "logs" / "metrics.csv").open()) if r.get("val/dice_ens")]
    assert [int(r["step"]) for r in logged] == [1, 3]  # Lightning logs a validation at step - 1
    assert result["val_dice"]["ens"]["mean"] == pytest.approx(float(logged[-1]["val/dice_ens"]), rel=1e-5)
    assert result["val_dice"]["ens"]["mean"] != pytest.approx(result["dice"]["ens"]["mean"], rel=1e-9)  # not the test
    curve = result["val_curve"]
    assert curve["step"] == [2, 4] and set(curve) == {"step", "syn", "real", "ens"}
    assert curve["ens"] == pytest.approx([float(r["val/dice_ens"]) for r in logged], rel=1e-5)
    rows = {r["predictor"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert float(rows["real"]["val_dice"]) == pytest.approx(result["val_dice"]["real"]["mean"], rel=1e-5)
    assert rows["real"]["val_step"] == "4"
    assert rows["real"]["val_curve"] == " ".join(f"{s}:{v:.4f}" for s, v in zip(curve["step"], curve["real"]))


def test_unfinished_run_is_redone_and_a_failure_does_not_stop_the_others(tmp_path, phantom_root, monkeypatch):
    configs, runs = tiny_config_dir(tmp_path, phantom_root), tmp_path / "runs"
    calls = []

    def fake_run(spec):
        calls.append(spec.config_name)
        if spec.config_name == "baseline":
            raise RuntimeError("boom")
        spec.dir.mkdir(parents=True, exist_ok=True)
        result = {"config": spec.config_name, "key": spec.key, "fold": 0, "seed": 0, "primary_predictor": "seg",
                  "global_step": 2, "fit_s": 0.0, "total_s": 0.0, "dice": {"seg": {"mean": 0.5}}}
        spec.result_path.write_text(json.dumps(result))
        return result

    monkeypatch.setattr("mkdseg.compare.runs.run_one", fake_run)  # where the harness runs it
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(tmp_path / "out"),
            "--runs-dir", str(runs), "--methods", "baseline", "joint"]
    assert main(args) == 1  # one run failed
    assert calls == ["baseline", "joint"]
    assert (next(runs.glob("baseline-*/fold0-seed0")) / "error.txt").read_text().strip().endswith("RuntimeError: boom")
    assert main(args) == 1 and calls[2:] == ["baseline"]  # only the unfinished run is tried again


def test_budget_rule_and_option_filtering():
    base = {"trainer": {"max_steps": 50}, "model": {"init_args": {"gen_filters": 8, "seg_channels": [4, 8, 16]}}}
    baseline = compose(base, {"model": {"class_path": "mkdseg.methods.Baseline"}})
    assert baseline["trainer"]["max_steps"] == 50
    assert baseline["model"]["init_args"] == {"seg_channels": [4, 8, 16]}  # no generator option for a segmentor-only method
    finetune = compose(base, {"model": {"class_path": "mkdseg.methods.FineTune"}})
    assert finetune["model"]["init_args"]["pretrain_steps"] == 50 and finetune["trainer"]["max_steps"] == 100
    offline = compose(base, {"model": {"class_path": "mkdseg.methods.OfflineTranslation", "init_args": {"translation_steps": 30}}}, steps=20)
    assert offline["model"]["init_args"]["translation_steps"] == 30 and offline["trainer"]["max_steps"] == 50
    assert offline["model"]["init_args"]["gen_filters"] == 8
    # --set model options reach the methods that have them; a study override a method lacks is an error
    mkd = compose(base, {"model": {"class_path": "mkdseg.methods.MKDModule"}}, sets=[("model.init_args.gen_blocks", 2)])
    assert mkd["model"]["init_args"]["gen_blocks"] == 2
    assert "gen_blocks" not in compose(base, {"model": {"class_path": "mkdseg.methods.Baseline"}}, sets=[("model.init_args.gen_blocks", 2)])["model"]["init_args"]
    with pytest.raises(ValueError, match="lambda_kd_real"):
        compose(base, {"model": {"class_path": "mkdseg.methods.Baseline"}}, overrides=[("model.init_args.lambda_kd_real", 0.0)])
    with pytest.raises(ValueError, match="class_path"):
        compose(base, {"model": {"class_path": "mkdseg.methods.NoSuchMethod"}})


def test_studies():
    base = yaml.safe_load((BENCH / "base.yaml").read_text())
    table1, table2 = make_study("table1", base), make_study("table2", base)
    assert {r.config for r in table1.rows} == {
        "baseline", "finetune", "joint", "xshape", "offline_translation", "online_translation", "online_translation_ensemble", "mkd"}
    assert [r.paper for r in table1.rows if r.config == "mkd"] == [88.49, 89.47, 90.12]
    # table 2's full MKD is exactly table 1's MKD run (same config, so the run is shared)
    full = next(r for r in table2.rows if r.label.startswith("MKD (full)"))
    mkd_rows = [r for r in table1.rows if r.config == "mkd"]
    method = yaml.safe_load((BENCH / "mkd.yaml").read_text())
    assert compose(base, method, list(full.overrides)) == compose(base, method, list(mkd_rows[0].overrides))
    assert {dict(r.overrides).get("model.init_args.lambda_kd_real") for r in table2.rows} == {None, 0.0}
    assert {r.config for r in table2.rows} == {"mkd", "mkd_no_alignment", "mkd_oracle_translation", "offline_oracle_translation"}
    mmwhs = yaml.safe_load((BENCH / "mmwhs.yaml").read_text())  # no paired renderings of real scans: no oracle row
    assert {r.config for r in make_study("table2", mmwhs).rows} == {"mkd", "mkd_no_alignment"}
    # table 3: the paper's 5/10/20 of 20 assistant subjects, scaled to the phantom's 12
    table3 = make_study("table3", base)
    assert sorted({dict(r.overrides)["data.n_assistant"] for r in table3.rows if r.overrides}) == [3, 6, 12]
    table4 = make_study("table4", base)
    assert table4.overrides["data.target"] == "mr" and table4.overrides["data.assistant"] == "ct"
    assert table4.overrides["data.root"] != base["data"]["root"]  # the phantom cache is per direction
    with pytest.raises(ValueError, match="table1"):
        make_study("table9", base)


@pytest.mark.parametrize("base_name", BASES)
def test_shipped_configs_compose_and_build_every_method(base_name, tmp_path):
    from mkdseg.cli import build_cli

    base = yaml.safe_load((BENCH / f"{base_name}.yaml").read_text())
    if base["data"]["source"] != "phantom":  # a cache with the base's modalities, no real scans needed
        write_tiny_cache(tmp_path / "data", base["data"]["target"], base["data"]["assistant"], base["data"]["image_size"])
    reproduce.check_shared_options(base, [])
    for name in METHOD_CONFIGS:
        config = reproduce.for_run(compose(base, yaml.safe_load((BENCH / f"{name}.yaml").read_text())), 1, 1, tmp_path / name)
        config["data"]["root"] = str(tmp_path / "data")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        if config["data"].get("assistant_as_target") and config["data"]["source"] != "phantom":
            with pytest.raises(ValueError, match="data.assistant_as_target needs data.source=phantom"):
                build_cli(["--config", str(path)], run=False)
            continue
        cli = build_cli(["--config", str(path)], run=False)
        assert cli.model.hparams.image_size == base["data"]["image_size"]
        assert cli.datamodule.hparams.fold == 1 and cli.trainer.max_steps in (base["trainer"]["max_steps"], 2 * base["trainer"]["max_steps"])


def test_parallel_jobs_give_the_same_results_as_one_process(tmp_path, phantom_root):
    configs = tiny_config_dir(tmp_path, phantom_root)
    common = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--threads", "1",
              "--methods", "baseline", "joint"]
    assert main(common + ["--jobs", "2", "--runs-dir", str(tmp_path / "parallel"), "--out", str(tmp_path / "p")]) == 0
    assert main(common + ["--runs-dir", str(tmp_path / "serial"), "--out", str(tmp_path / "s")]) == 0

    def results(folder):
        return {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/fold0-seed0/result.json"))}

    parallel, serial = results(tmp_path / "parallel"), results(tmp_path / "serial")
    assert sorted(parallel) == sorted(serial) and len(parallel) == 2
    for key, result in parallel.items():
        assert result["torch_threads"] == 1 and result["global_step"] == 2
        assert result["dice"] == serial[key]["dice"]  # same seed, same thread count: the same numbers
    assert "2 run(s) trained, 0 reused, 0 failed" in (tmp_path / "p" / "results.md").read_text()


def test_a_failing_run_in_a_worker_is_recorded_and_the_others_finish(tmp_path, phantom_root):
    configs = tiny_config_dir(tmp_path, phantom_root)
    broken = yaml.safe_load((configs / "joint.yaml").read_text())
    broken.setdefault("model", {}).setdefault("init_args", {})["seg_strides"] = [2]  # too few for 4 channel levels: the U-Net refuses
    (configs / "joint.yaml").write_text(yaml.safe_dump(broken))
    runs = tmp_path / "runs"
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(tmp_path / "out"),
            "--runs-dir", str(runs), "--methods", "baseline", "joint", "--jobs", "2"]
    assert main(args) == 1
    assert len(list(runs.glob("baseline-*/fold0-seed0/result.json"))) == 1
    error = next(runs.glob("joint-*/fold0-seed0/error.txt")).read_text()
    assert "Traceback" in error and not list(runs.glob("joint-*/fold0-seed0/result.json"))


def test_jobs_must_be_positive(tmp_path, phantom_root):
    configs = tiny_config_dir(tmp_path, phantom_root)
    with pytest.raises(SystemExit):
        main(["table1", "--config-dir", str(configs), "--jobs", "0", "--report-only"])


def test_translation_probe_dice_and_a_tiny_run(tmp_path, phantom_root):
    from benchmarks import translation_quality as tq

    label = torch.tensor([[0, 1, 1], [2, 2, 0]])
    assert tq.pooled_dice(label, label) == 1.0
    # class 1: 2*1/(1+2); class 2: 2*2/(3+2); class 3 is absent from the label and not counted
    assert tq.pooled_dice(torch.tensor([[0, 1, 2], [2, 2, 3]]), label) == pytest.approx((2 / 3 + 4 / 5) / 2)

    configs, out = tiny_config_dir(tmp_path, phantom_root), tmp_path / "out"
    args = ["--base", str(configs / "base.yaml"), "--config-dir", str(configs), "--steps", "2", "--every", "1",
            "--judge-steps", "2", "--seeds", "0", "--held-out", "1", "--variant", "paper",
            "--variant", "resize:model.init_args.gen_upsampling=resize", "--out", str(out), "--work", str(tmp_path / "work")]
    assert tq.main(args) == 0
    result = json.loads((out / "resize-seed0.json").read_text())
    assert result["sets"] == [["model.init_args.gen_upsampling", "resize"]]
    assert result["held_out_assistant_subjects"] == ["003"]  # the last of the 4 MR subjects, never trained on
    config = yaml.safe_load((tmp_path / "work" / "resize-seed0" / "config.yaml").read_text())
    assert config["data"]["n_assistant"] == 3 and config["model"]["init_args"]["gen_upsampling"] == "resize"
    rows = result["rows"]
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert rows[0]["cpu_seconds"] <= rows[1]["cpu_seconds"] <= rows[2]["cpu_seconds"]
    assert all(0 <= row["judge"] <= 1 and set(row["contrast"]) == {"fat<MYO", "RA<AA"} for row in rows)
    assert set(rows[-1]["intensity_error"]) <= set(MMWHS_NAMES)
    report = (out / "results.md").read_text()
    assert "| paper |" in report and "| resize |" in report and "At equal CPU seconds" in report
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"

    # a finished run is reused, not trained again: its JSON is what the report reads
    result["rows"][-1]["judge"] = 0.123456
    (out / "resize-seed0.json").write_text(json.dumps(result))
    (out / "paper-seed0.json").unlink()
    assert tq.main(args) == 0
    assert json.loads((out / "resize-seed0.json").read_text())["rows"][-1]["judge"] == 0.123456
    assert (out / "paper-seed0.json").is_file()

    # --report-only rebuilds the report from the JSON there, and trains nothing
    (out / "paper-seed0.json").unlink()
    assert tq.main(args + ["--report-only"]) == 0
    assert not (out / "paper-seed0.json").exists()
    report = (out / "results.md").read_text()
    assert "| resize | 1 |" in report and "| paper |" not in report and "0.123" in report


def test_probe_reference_scores_the_perfect_translation_as_perfect(phantom_root):
    """The phantom's own CT rendering has no contrast error and keeps CT's orders; the MR rendering of
    the same anatomy breaks fat < MYO (fat is bright in MR)."""
    from benchmarks import translation_quality as tq
    from mkdseg.data.cache import SliceCache
    from mkdseg.data.phantom import render_record_as

    records = SliceCache(phantom_root).volumes("mri")[:2]
    reference = tq.PhantomReference.of(records, "ct")
    labels = torch.cat([torch.from_numpy(np.array(SliceCache(phantom_root).load(r)[1])) for r in records])
    errors = reference.intensity_errors(reference.images, labels, list(MMWHS_NAMES))
    assert errors and max(errors.values()) == 0.0
    assert reference.contrast_orders(reference.images, list(tq.CT_CONTRAST)) == {"fat<MYO": True, "RA<AA": True}
    mr = torch.from_numpy(np.concatenate([render_record_as(r, "mr") for r in records]))[:, None]
    assert reference.contrast_orders(mr, ["fat<MYO"]) == {"fat<MYO": False}
    mr_errors = reference.intensity_errors(mr, labels, list(MMWHS_NAMES))
    assert sum(mr_errors.values()) / len(mr_errors) > 50  # HU: raw MR is far from CT on average


def test_probe_curves_interpolate_and_variants_parse():
    from benchmarks import translation_quality as tq

    rows = [{"iteration": 0, "judge": 0.0}, {"iteration": 100, "judge": 0.5}, {"iteration": 200, "judge": 0.7}]
    assert tq.interpolate(rows, "iteration", 50) == pytest.approx(0.25)
    assert tq.interpolate(rows, "iteration", 150) == pytest.approx(0.6)
    assert tq.interpolate(rows, "iteration", 250) is None  # beyond the run: not extrapolated
    assert tq.parse_variant("paper") == ("paper", [])
    assert tq.parse_variant("x:model.init_args.lambda_cyc=5,data.n_val=0") == (
        "x", [("model.init_args.lambda_cyc", 5), ("data.n_val", 0)])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        tq.parse_variant("x:lambda_cyc")


def test_paired_difference_matches_draws_by_fold_and_seed():
    def run(fold, seed, mean, predictor="seg"):
        return {"fold": fold, "seed": seed, "dice": {predictor: {"mean": mean}}}

    baseline = [run(0, 0, 0.40), run(0, 1, 0.50), run(1, 0, 0.30)]
    method = [run(0, 1, 0.55, "ens"), run(0, 0, 0.38, "ens"), run(1, 0, 0.45, "ens"), run(1, 1, 0.90, "ens")]
    mean, better, compared = reproduce.paired_difference(method, "ens", baseline, "seg")
    # (1,1) has no baseline draw and is left out; the others pair by (fold, seed), not by position
    assert compared == 3 and better == 2
    assert mean == pytest.approx((0.05 - 0.02 + 0.15) / 3)
    assert reproduce.paired_difference(method, "ens", [], "seg") is None


@pytest.mark.parametrize("method, primary", [("baseline", "seg"), ("mkd", "ens")])  # MKD: six optimizers, manual steps
def test_best_validation_weights_are_tested_and_the_final_ones_kept(tmp_path, phantom_root, method, primary):
    configs, out, runs = tiny_config_dir(tmp_path, phantom_root), tmp_path / "out", tmp_path / "runs"
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(out), "--runs-dir",
            str(runs), "--methods", method, "--steps", "6", "--set", "trainer.val_check_interval=2",
            "--set", "data.n_val=1", "--set", "model.init_args.lr_seg=5.0", "--test-weights", "best"]
    assert main(args) == 0
    path = next(runs.glob(f"{method}-*/fold0-seed0/result.json"))
    result = json.loads(path.read_text())
    curve = result["val_curve"]
    best = int(np.argmax(curve[primary]))
    assert result["tested_weights"] == "best validation"
    assert result["best_val_dice"] == pytest.approx(max(curve[primary]), rel=1e-5)
    assert result["best_checkpoint"] == f"best-step={curve['step'][best]}.ckpt"
    assert (path.parent / "logs" / "checkpoints" / result["best_checkpoint"]).is_file()
    # lr_seg 5 makes these 6 steps erratic, so that the best validation is not the last one and the two tests differ
    assert curve["step"][best] != curve["step"][-1]
    assert result["dice"][primary]["mean"] != pytest.approx(result["dice_last"][primary]["mean"], rel=1e-6)
    rows = {r["predictor"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert rows[primary]["val_step"] == str(curve["step"][best])  # what choosing among runs sees: the tested weights
    assert float(rows[primary]["val_dice"]) == pytest.approx(curve[primary][best], rel=1e-5)
    assert float(rows[primary]["mean_dice_last"]) == pytest.approx(result["dice_last"][primary]["mean"], rel=1e-5)
    # the last-weights run of the same config is a different run (its own folder), not this one reused
    assert main(args[:-2]) == 0
    assert len(list(runs.glob(f"{method}-*/fold0-seed0/result.json"))) == 2


def test_best_validation_weights_without_validation_is_a_clear_error(tmp_path, phantom_root):
    configs, runs = tiny_config_dir(tmp_path, phantom_root), tmp_path / "runs"
    args = ["table1", "--folds", "1", "--seeds", "1", "--config-dir", str(configs), "--out", str(tmp_path / "out"),
            "--runs-dir", str(runs), "--methods", "baseline", "--steps", "2", "--set", "data.n_val=0", "--test-weights", "best"]
    assert main(args) == 1
    error = next(runs.glob("baseline-*/fold0-seed0/error.txt")).read_text()
    assert "no validation ran" in error and "data.n_val" in error


def test_beyond_study_pairs_every_option_with_joint_training_and_the_rows_filter(tmp_path, phantom_root, capsys):
    base = yaml.safe_load((BENCH / "abdomen.yaml").read_text())
    study = make_study("beyond", base)
    assert study.rows[0].label == study.reference == "Joint training"
    assert {r.config for r in study.rows} <= set(METHOD_CONFIGS)
    gin = [r for r in study.rows if dict(r.overrides).get("data.appearance") == "gin"]
    assert {r.config for r in gin} >= {"joint", "mkd_no_alignment", "mean_teacher", "baseline", "finetune"}
    for row in study.rows:  # every row composes: its overrides are options its method has
        compose(base, yaml.safe_load((BENCH / f"{row.config}.yaml").read_text()), list(row.overrides))
    table = reproduce.aggregate(study.rows[:2], {
        study.rows[0]: [{"fold": 0, "seed": 0, "dice": {"seg": {"mean": 0.5}}}],
        study.rows[1]: [{"fold": 0, "seed": 0, "dice": {"seg": {"mean": 0.6}}}]}, study.reference)
    assert table[1]["paired"] == (pytest.approx(0.1), 1, 1) and table[0]["paired"] is None
    configs = tiny_config_dir(tmp_path, phantom_root)
    with pytest.raises(SystemExit):
        reproduce.main(["beyond", "--config-dir", str(configs), "--rows", "No such row", "--report-only"])
    assert "has no such row" in capsys.readouterr().err
