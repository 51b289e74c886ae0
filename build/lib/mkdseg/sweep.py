"""``mkdseg sweep``: run a W&B sweep file without a W&B server.

The sweep files in ``configs/sweeps/`` are ordinary W&B sweep configurations: with a W&B account,
``wandb sweep configs/sweeps/lambda_kd.yaml`` and then ``wandb agent <sweep id>`` (from the
repository root) run them unchanged. Where no W&B server can be reached (clusters without internet),
this runner does the agent's work locally::

    mkdseg sweep configs/sweeps/lambda_kd.yaml [--max-runs N] [--out DIR] [extra `mkdseg fit` arguments]

* ``grid``: every combination of the parameters' ``values``, in order.
* ``random``: ``--max-runs`` draws (default: the file's ``run_cap``, else 10) from the parameters'
  distributions, seeded by ``--seed``.
* ``bayes``: needs W&B's sweep controller (a Gaussian process fitted to earlier runs), which is not
  available offline; the runner samples at random from the same space instead and says so. The
  resulting offline runs can be uploaded later with ``wandb sync``.

Each run is the sweep's ``command`` with ``${args}`` expanded exactly as ``wandb agent`` does
(``--model.lambda_kd_real=0.25 ...``, last, so they override the configs), preceded by the extra
arguments given here and by a config that logs to an offline ``WandbLogger`` in ``DIR/<run>``, and a
:class:`~mkdseg.callbacks.MetricHistory` that writes each validation's metrics to ``DIR/<run>/metrics.json``.
At the end the runner prints, and writes to ``DIR/results.md`` and ``DIR/results.csv``, the sweep
metric of every run: its last value (the W&B summary, which a W&B sweep optimises) and its best, ranked
best first, with the checkpoints each run kept on validation (``checkpoint``). ``configs/sweeps/seeds.yaml``
uses this to train two seeds of one run and keep the better.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
TOP_LEVEL_KEYS = {
    "name", "description", "program", "method", "metric", "parameters", "command", "early_terminate",
    "run_cap", "project", "entity", "controller", "job", "image_uri",
}
DISTRIBUTIONS = (
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform_values", "normal",
)
ARGS_MACROS = ("${args}", "${args_no_hyphens}", "${args_no_boolean_flags}", "${args_json}", "${args_no_equals}", "${args_json_file}")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


# -- the sweep file ------------------------------------------------------------------------------
def sweep_problems(config: object) -> list[str]:
    """What is wrong with a sweep configuration (W&B's schema, as far as this runner needs it)."""
    if not isinstance(config, dict):
        return ["a sweep file must be a mapping"]
    problems = [f"unknown key {k!r} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})" for k in config if k not in TOP_LEVEL_KEYS]
    if config.get("method") not in METHODS:
        problems.append(f"method must be one of {METHODS}, got {config.get('method')!r}")
    metric = config.get("metric")
    if metric is None:
        if config.get("method") == "bayes":
            problems.append("method bayes needs a metric (name and goal)")
    elif not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        problems.append("metric must be a mapping with a name")
    elif metric.get("goal", "minimize") not in GOALS:
        problems.append(f"metric.goal must be one of {GOALS}, got {metric.get('goal')!r}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        problems.append("parameters must be a non-empty mapping of parameter name to its specification")
    else:
        for name, spec in parameters.items():
            problems += [f"parameters.{name}: {p}" for p in _parameter_problems(spec, config.get("method"))]
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        problems.append("command must be a list of strings")
    elif not any(c in ARGS_MACROS for c in command):
        problems.append(f"command passes no parameters to the program: it needs one of {ARGS_MACROS}")
    elif "${program}" in command and not config.get("program"):
        problems.append("command uses ${program} but the file sets no program")
    return problems


def _parameter_problems(spec: object, method: str | None) -> list[str]:
    if not isinstance(spec, dict):
        return ["must be a mapping (values, value, or a distribution with its bounds)"]
    distribution = _distribution(spec)
    if distribution not in DISTRIBUTIONS:
        return [f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"]
    needs = {
        "constant": ("value",), "categorical": ("values",), "normal": (),
    }.get(distribution, ("min", "max"))
    problems = [f"{distribution} needs {key!r}" for key in needs if key not in spec]
    if distribution == "categorical" and not (isinstance(spec.get("values"), list) and spec["values"]):
        problems.append("values must be a non-empty list")
    if "min" in spec and "max" in spec and not spec["min"] < spec["max"]:
        problems.append(f"min must be < max, got {spec['min']} and {spec['max']}")
    if method == "grid" and distribution not in ("constant", "categorical"):
        problems.append("a grid needs values (or a single value) for every parameter")
    return problems


def _distribution(spec: dict) -> str | None:
    """W&B's rule: an explicit ``distribution``, else ``values`` -> categorical, ``value`` -> constant,
    integer bounds -> int_uniform, other bounds -> uniform."""
    if "distribution" in spec:
        return spec["distribution"]
    if "values" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    if "min" in spec and "max" in spec:
        return "uniform"
    return None


def load_sweep(path: str | Path) -> dict:
    """Read and check a sweep file; ``ValueError`` lists every problem."""
    path = Path(path)
    config = yaml.safe_load(path.read_text())
    problems = sweep_problems(config)
    if problems:
        raise ValueError(f"{path}: invalid sweep configuration:\n  " + "\n  ".join(problems))
    return config


# -- parameter sets ------------------------------------------------------------------------------
def proposals(config: dict, max_runs: int | None = None, seed: int = 0) -> list[dict]:
    """The parameter sets to run: the grid in order, or random draws (also for bayes, offline)."""
    parameters = config["parameters"]
    if config["method"] == "grid":
        names = list(parameters)
        choices = [parameters[n]["values"] if "values" in parameters[n] else [parameters[n]["value"]] for n in names]
        grid = [dict(zip(names, combination)) for combination in itertools.product(*choices)]
        return grid[:max_runs] if max_runs else grid
    count = max_runs or config.get("run_cap") or 10
    rng = random.Random(seed)
    return [{name: _sample(spec, rng) for name, spec in parameters.items()} for _ in range(count)]


def _sample(spec: dict, rng: random.Random):
    distribution = _distribution(spec)
    if distribution == "constant":
        return spec["value"]
    if distribution == "categorical":
        weights = spec.get("probabilities")
        return rng.choices(spec["values"], weights=weights)[0]
    if distribution == "int_uniform":
        return rng.randint(spec["min"], spec["max"])
    if distribution == "normal":
        return rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0))
    low, high = float(spec["min"]), float(spec["max"])
    if distribution == "uniform":
        return rng.uniform(low, high)
    if distribution == "q_uniform":
        q = spec.get("q", 1.0)
        return round(rng.uniform(low, high) / q) * q
    if distribution == "log_uniform":  # bounds are natural logarithms
        return math.exp(rng.uniform(low, high))
    value = math.exp(rng.uniform(math.log(low), math.log(high)))  # log_uniform_values, q_log_uniform_values
    if distribution == "q_log_uniform_values":
        q = spec.get("q", 1.0)
        value = round(value / q) * q
    return value


def agent_arguments(params: dict) -> dict[str, list[str]]:
    """The expansions of ``${args}``, ``${args_no_hyphens}``, ... exactly as ``wandb agent`` makes them."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})


def run_command(config: dict, params: dict, extra: list[str], args_json_file: Path | None = None) -> list[str]:
    """The command ``wandb agent`` would run for ``params``, with ``extra`` arguments inserted before the
    parameters. ``mkdseg`` at its head runs as ``python -m mkdseg`` of this installation."""
    expansions = agent_arguments(params)
    expansions.update(env=[], interpreter=[sys.executable], program=[str(config.get("program", ""))])
    if args_json_file is not None:
        args_json_file.write_text(expansions["args_json"][0])
        expansions["args_json_file"] = [str(args_json_file)]
    command: list[str] = []
    inserted = False
    for token in config.get("command", DEFAULT_COMMAND):
        if token in ARGS_MACROS and not inserted:
            command += extra
            inserted = True
        if token.startswith("${envvar:") and token.endswith("}"):
            command.append(os.environ.get(token[9:-1], token[9:-1]))
        elif token.startswith("${") and token.endswith("}"):
            command += expansions.get(token[2:-1], [])
        else:
            command.append(token)
    if command and command[0] == "mkdseg":
        command[:1] = [sys.executable, "-m", "mkdseg"]
    return command


# -- the runner ----------------------------------------------------------------------------------
def _logger_config(run_dir: Path, run_name: str, config: dict) -> dict:
    return {"trainer": {
        "default_root_dir": str(run_dir),
        "logger": {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {
            "name": run_name, "version": None, "offline": True,
            "project": config.get("project", "mkdseg"), "group": config.get("name", "sweep"),
        }},
    }}


def run_sweep(config: dict, extra: list[str], out: Path, max_runs: int | None = None, seed: int = 0, dry_run: bool = False) -> list[dict]:
    metric = config.get("metric", {}).get("name", "val/dice_ens")
    runs = proposals(config, max_runs, seed)
    if config["method"] == "bayes":
        print("note: bayes needs W&B's sweep controller; offline, the parameters are drawn at random from the same space")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, params in enumerate(runs):
        name = f"run{i:03d}"
        run_dir = out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        logger_yaml = run_dir / "wandb_offline.yaml"
        logger_yaml.write_text(yaml.safe_dump(_logger_config(run_dir, name, config)))
        # the metric's history, read back below: W&B keeps it in a binary run file with no public reader
        history_file = run_dir / "metrics.json"
        recorder = ["--trainer.callbacks+=mkdseg.callbacks.MetricHistory", f"--trainer.callbacks.path={history_file}"]
        command = run_command(config, params, [*extra, "--config", str(logger_yaml), *recorder], run_dir / "args.json")
        shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"[{i + 1}/{len(runs)}] {shown}", flush=True)
        if dry_run:
            print("  " + " ".join(command))
            results.append({"run": name, **params, "status": "not run"})
            continue
        # its own wandb-core service, as under `wandb agent` (not one this process's environment points to)
        env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"WANDB_MODE": "offline"}
        with open(run_dir / "fit.log", "w") as log:
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        row = {"run": name, **params, "status": "ok" if rc == 0 else f"failed ({rc}), see {run_dir / 'fit.log'}"}
        offline = sorted((run_dir / "wandb").glob("offline-run-*"))
        values = json.loads(history_file.read_text()).get(metric, []) if history_file.exists() else []
        if values:
            best = max(values) if config.get("metric", {}).get("goal") == "maximize" else min(values)
            row.update({f"{metric} (last)": values[-1], f"{metric} (best)": best})
        kept = best_checkpoints(run_dir)
        if kept:
            row["checkpoint"] = " ".join(str(p) for p in kept)
        if offline:
            row["wandb run"] = str(offline[-1])  # to upload: wandb sync <this folder>
        print(f"  -> {row['status']}" + (f", {metric} = {row[f'{metric} (last)']:.4f}" if f"{metric} (last)" in row else ""), flush=True)
        results.append(row)
    if not dry_run:
        write_results(results, out, config)
    return results


def best_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a run kept on its validation metric: every ``*.ckpt`` under ``run_dir`` but the
    ``last*.ckpt`` that ``ModelCheckpoint(save_last=True)`` writes."""
    return sorted(p for p in run_dir.rglob("*.ckpt") if not p.name.startswith("last"))


def write_results(results: list[dict], out: Path, config: dict) -> str:
    metric = config.get("metric", {}).get("name", "val/dice_ens")
    key = f"{metric} (last)"
    reverse = config.get("metric", {}).get("goal") == "maximize"
    ranked = sorted(results, key=lambda r: (key not in r, -r[key] if key in r and reverse else r.get(key, 0)))
    columns = list(dict.fromkeys(k for r in ranked for k in r if k != "wandb run"))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in ranked:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    table = "\n".join(lines)
    goal = config.get("metric", {}).get("goal", "minimize")
    text = f"# Sweep {config.get('name', '')} ({config['method']}, offline): {metric}, goal {goal}\n\n{table}\n"
    (out / "results.md").write_text(text)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in ranked for k in r)))
        writer.writeheader()
        writer.writerows(ranked)
    print("\n" + text + f"\n(also {out / 'results.csv'}; upload the runs later with `wandb sync {out}/run*/wandb/offline-run-*`)")
    return table


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mkdseg sweep", description="Run a W&B sweep file locally with offline W&B logging (no W&B server needed).",
        epilog="Arguments not listed here go to every `mkdseg fit`, before the sweep's parameters, "
        "e.g. --config configs/demo.yaml --trainer.max_steps=200.",
    )
    parser.add_argument("sweep", help="a W&B sweep file, e.g. configs/sweeps/lambda_kd.yaml")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many runs (grid: the first N)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (random and bayes)")
    parser.add_argument("--out", default=None, help="where runs and results go (default runs/sweeps/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args, extra = parser.parse_known_args(argv)
    try:
        config = load_sweep(args.sweep)
    except (OSError, ValueError) as e:
        print(f"mkdseg sweep: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / "sweeps" / config.get("name", Path(args.sweep).stem))
    results = run_sweep(config, extra, out, args.max_runs, args.seed, args.dry_run)
    return 0 if all(r["status"] in ("ok", "not run") for r in results) else 1
