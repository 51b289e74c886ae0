"""Cheaper CPU iterations: ``make demo``'s run under each speed setting, with the Dice it reaches.

    python -m benchmarks.cpu_speed                        # fp32, bf16, bf16 + channels_last; one thread each
    python -m benchmarks.cpu_speed --settings fp32 bf16_channels_last --out benchmarks/results/cpu_speed
    python -m benchmarks.cpu_speed --settings fp32 --out /tmp/cpu_speed --work /tmp/cpu_speed_runs --trainer.max_steps=2

Each setting runs ``python -m mkdseg.demo`` (``configs/demo.yaml``: MKD on the phantom, 600 iterations,
then the test of the chosen checkpoint) in a child process with ``OMP_NUM_THREADS=1``, and records the
child's CPU seconds (user + system, from ``getrusage``), the training's wall time as the demo prints it,
iterations per training second, and the test Dice of each predictor from the run's ``summary.json``.
Per-iteration cost in isolation is ``benchmarks/iteration_cost.py``'s job; this is the whole run, data loading,
validation and test included.

A setting's ``<out>/<setting>.json`` is reused when it exists (delete it to redo); ``results.md`` is
written from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> extra LightningCLI arguments of the demo
SETTINGS = {
    "fp32": [],
    "bf16": ["--trainer.precision=bf16-mixed"],
    "channels_last": ["--trainer.callbacks+=mkdseg.callbacks.memory_format.ChannelsLast"],
    "bf16_channels_last": ["--trainer.precision=bf16-mixed", "--trainer.callbacks+=mkdseg.callbacks.memory_format.ChannelsLast"],
}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_setting(name: str, config: Path, work: Path, extra: list[str]) -> dict:
    run_dir = work / name
    command = [sys.executable, "-m", "mkdseg.demo", "--config", str(config), "--run-dir", str(run_dir), *SETTINGS[name], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"setting {name}: the demo failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    trained = re.search(r"trained (\d+) iterations in [\d.]+ min \((\d+) s\)", done.stdout)
    if not trained:
        raise RuntimeError(f"setting {name}: no 'trained N iterations' line in the demo's output")
    # printed to the second: a run shorter than half a second (a quick check's) reads 0
    iterations, fit_seconds = int(trained.group(1)), max(float(trained.group(2)), 0.5)
    summaries = sorted(run_dir.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        raise RuntimeError(f"setting {name}: the demo wrote no summary.json under {run_dir}")
    dice = json.loads(summaries[-1].read_text())["dice"]
    return {"setting": name, "arguments": SETTINGS[name] + extra, "iterations": iterations,
            "fit_wall_seconds": fit_seconds, "process_cpu_seconds": round(cpu, 1),
            "process_wall_seconds": round(wall, 1), "iterations_per_fit_second": round(iterations / fit_seconds, 3),
            "dice_mean": {predictor: values["mean"]["mean"] for predictor, values in dice.items()}}


def write_report(out: Path, results: list[dict], command: str) -> None:
    reference = next((r for r in results if r["setting"] == "fp32"), results[0])
    predictors = list(reference["dice_mean"])
    lines = ["# CPU speed settings at demo size (`make demo`'s run)", "", f"Command: `{command}`", "",
             "| setting | it / training s | speed-up | process CPU s | " + " | ".join(f"Dice {p}" for p in predictors) + " |",
             "|---" * (4 + len(predictors)) + "|"]
    for r in results:
        speedup = r["iterations_per_fit_second"] / reference["iterations_per_fit_second"]
        dice = " | ".join(f"{100 * r['dice_mean'][p]:.2f}" for p in predictors)
        lines.append(f"| {r['setting']} | {r['iterations_per_fit_second']:.3f} | {speedup:.2f}x | {r['process_cpu_seconds']:.0f} | {dice} |")
    lines += ["", "One torch thread per run; the training time is what the demo prints (fit only); the process CPU "
              "seconds include start-up, validation and the test.", ""]
    (out / "results.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["fp32", "bf16", "bf16_channels_last"], choices=sorted(SETTINGS))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_speed")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "cpu_speed")
    parser.add_argument("extra", nargs="*", help="more LightningCLI arguments for every setting, e.g. --trainer.max_steps=100")
    args, unknown = parser.parse_known_args(argv)
    extra = [*args.extra, *unknown]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.settings:
        path = args.out / f"{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
        else:
            result = run_setting(name, args.config, args.work, extra)
            path.write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)
        results.append(result)
    command = "python -m benchmarks.cpu_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(args.out, results, command)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
