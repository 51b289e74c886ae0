"""W&B sweeps over the distillation weights: the sweep files, the parameter sets they propose, and the
offline runner (``mkdseg sweep``). Under DDP, rank 0 alone creates the W&B run: see test_ddp.py."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from mkdseg.cli import VERBS, build_cli, main
from mkdseg.sweep import load_sweep, proposals, run_command, sweep_problems

from conftest import REPO
from test_cli import tiny_config

SWEEPS = REPO / "configs" / "sweeps"
PARAMETERS = {"model.lambda_kd_real", "model.lambda_kd_syn"}


@pytest.mark.parametrize("name, method", [("lambda_kd.yaml", "grid"), ("lambda_kd_bayes.yaml", "bayes")])
def test_sweep_files_are_wandb_sweeps_over_both_distillation_weights(name, method):
    config = load_sweep(SWEEPS / name)
    assert config["method"] == method
    assert config["metric"] == {"name": "val/dice_ens", "goal": "maximize"}
    assert set(config["parameters"]) == PARAMETERS
    command = config["command"]
    assert command[:3] == ["${env}", "mkdseg", "fit"] and command[-1] == "${args}"
    assert "configs/trainer/wandb.yaml" in command  # the runs log to W&B
    for token in command:
        if token.startswith("configs/"):
            assert (REPO / token).is_file(), token


def test_proposals_grid_in_order_and_random_draws_for_bayes():
    grid = proposals(load_sweep(SWEEPS / "lambda_kd.yaml"))
    assert len(grid) == 16 and len({tuple(p.values()) for p in grid}) == 16
    assert {"model.lambda_kd_real": 0.5, "model.lambda_kd_syn": 1.0} in grid  # the paper's setting
    bayes = load_sweep(SWEEPS / "lambda_kd_bayes.yaml")
    draws = proposals(bayes, seed=3)
    assert len(draws) == bayes["run_cap"] == 20
    assert all(0.0 <= p[k] <= 2.0 for p in draws for k in PARAMETERS)
    assert draws == proposals(bayes, seed=3) and draws != proposals(bayes, seed=4)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "hyperopt"}, "method must be one of"),
        ({"metric": {"name": "val/dice_ens", "goal": "max"}}, "metric.goal"),
        ({"metric": None}, "bayes needs a metric"),
        ({"parameters": {"model.lambda_kd_real": {"min": 1.0, "max": 0.5}}}, "min must be < max"),
        ({"parameters": {"model.lambda_kd_real": {"distribution": "beta", "min": 0, "max": 1}}}, "distribution must be one of"),
        ({"command": ["mkdseg", "fit", "--config", "configs/mkd.yaml"]}, "passes no parameters"),
        ({"paramters": {}}, "unknown key 'paramters'"),
    ],
)
def test_broken_sweep_files_are_rejected_naming_the_problem(change, message):
    config = {**yaml.safe_load((SWEEPS / "lambda_kd_bayes.yaml").read_text()), **change}
    config = {k: v for k, v in config.items() if v is not None}
    assert any(message in p for p in sweep_problems(config)), sweep_problems(config)
    grid = {**yaml.safe_load((SWEEPS / "lambda_kd.yaml").read_text())}
    grid["parameters"] = {"model.lambda_kd_real": {"min": 0.0, "max": 1.0}}
    assert any("a grid needs values" in p for p in sweep_problems(grid))


def test_every_proposed_parameter_set_parses_with_the_cli(tmp_path, phantom_root):
    """The arguments `wandb agent` (and the offline runner) build from each proposal, after the sweep
    command's configs, parse with LightningCLI's parser and reach the model."""
    parser = build_cli(["--config", str(tiny_config(tmp_path, phantom_root))], run=False).parser
    for name in ("lambda_kd.yaml", "lambda_kd_bayes.yaml"):
        config = load_sweep(SWEEPS / name)
        for params in proposals(config):
            command = run_command(config, params, extra=[])
            arguments = command[command.index("fit") + 1:]
            arguments = [str(REPO / a) if a.startswith("configs/") else a for a in arguments]
            assert [a for a in arguments if a.startswith("--model.")] == [f"--{k}={v}" for k, v in params.items()]
            namespace = parser.parse_args(arguments)
            assert namespace.model.init_args.lambda_kd_real == params["model.lambda_kd_real"]
            assert namespace.model.init_args.lambda_kd_syn == params["model.lambda_kd_syn"]
            assert namespace.model.class_path == "mkdseg.methods.MKDModule"
            assert namespace.trainer.logger.class_path == "lightning.pytorch.loggers.WandbLogger"


def test_offline_sweep_run_logs_val_dice_to_an_offline_wandb_run(tmp_path, phantom_root, monkeypatch):
    """`mkdseg sweep` runs the sweep's own command (configs/mkd.yaml + configs/trainer/wandb.yaml +
    `${args}`) with a tiny config inserted, 1 iteration, and reads val/dice_ens back from the offline run."""
    monkeypatch.chdir(REPO)  # the sweep command's config paths are relative to the repository, as for `wandb agent`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = yaml.safe_load((SWEEPS / "lambda_kd.yaml").read_text())
    sweep["parameters"] = {"model.lambda_kd_real": {"values": [0.25]}, "model.lambda_kd_syn": {"value": 0.5}}
    sweep_file = tmp_path / "one_run.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    tiny = tiny_config(tmp_path, phantom_root, max_steps=1)
    out = tmp_path / "sweep"
    assert "sweep" in VERBS
    assert main(["sweep", str(sweep_file), "--out", str(out), "--config", str(tiny), "--trainer.val_check_interval=1"]) == 0

    (row,) = list(csv.DictReader((out / "results.csv").open()))
    assert row["status"] == "ok" and float(row["model.lambda_kd_real"]) == 0.25
    assert 0.0 <= float(row["val/dice_ens (last)"]) <= 1.0
    (wandb_run,) = (out / "run000" / "wandb").glob("offline-run-*")  # one offline W&B run, to `wandb sync`
    assert list(wandb_run.glob("run-*.wandb")) and row["wandb run"] == str(wandb_run)
    history = json.loads((out / "run000" / "metrics.json").read_text())
    assert history["val/dice_ens"] == [pytest.approx(float(row["val/dice_ens (last)"]))]
    (saved,) = (out / "run000").rglob("config.yaml")  # the run's resolved config, saved by LightningCLI
    model = yaml.safe_load(saved.read_text())["model"]["init_args"]
    assert model["lambda_kd_real"] == 0.25 and model["lambda_kd_syn"] == 0.5  # ${args} reached the model
    assert model["gen_filters"] == 4  # the inserted tiny config, not configs/mkd.yaml's 64
    assert "val/dice_ens" in (out / "results.md").read_text()


def test_seed_sweep_trains_each_seed_and_ranks_them_with_their_checkpoints(tmp_path, phantom_root, monkeypatch):
    """configs/sweeps/seeds.yaml: one run per seed, the seed reaching the data order too (the checkpoint's
    data hyper-parameters), ranked by validation Dice with the checkpoint each run kept."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = load_sweep(SWEEPS / "seeds.yaml")
    assert config["metric"] == {"name": "val/dice_ens", "goal": "maximize"}
    assert [p["seed_everything"] for p in proposals(config)] == [0, 1]
    tiny = tiny_config(tmp_path, phantom_root, max_steps=2)
    out = tmp_path / "seeds"
    assert main(["sweep", str(SWEEPS / "seeds.yaml"), "--out", str(out), "--config", str(tiny),
                 "--trainer.val_check_interval=2"]) == 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    scores = [float(r["val/dice_ens (last)"]) for r in rows]
    assert sorted(int(r["seed_everything"]) for r in rows) == [0, 1] and scores == sorted(scores, reverse=True)
    for row in rows:
        (checkpoint,) = row["checkpoint"].split()
        assert checkpoint.startswith(str(out / f"run00{row['seed_everything']}"))
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        assert saved["datamodule_hyper_parameters"]["sampler_seed"] == int(row["seed_everything"])
