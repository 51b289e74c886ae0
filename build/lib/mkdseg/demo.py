"""``make demo``: train the paper's MKD on the phantom with configs/demo.yaml, test it, print the Dice table;
with ``--recipe``, then train and test the recommended recipe on the same data and print both side by side.

Each run is ``mkdseg fit --config configs/demo.yaml [--config RECIPE]`` followed by ``mkdseg test`` on its
best checkpoint, in one process, with the timing and the paths of what it wrote.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mkdseg.training import fit_and_test
from mkdseg.metrics import format_table


def train_and_test(configs: list[str], run_dir: str, overrides: list[str]) -> dict:
    """Fit, test the best checkpoint, print the Dice table; ``{"name", "dice", "seconds", "log_dir"}``."""
    start = time.perf_counter()
    args = [arg for config in configs for arg in ("--config", config)]
    fitted = fit_and_test([*args, f"--trainer.default_root_dir={run_dir}", *overrides])
    cli, fit_seconds = fitted.cli, fitted.fit_s
    best = fitted.best.best_model_path if fitted.best is not None else None
    total = time.perf_counter() - start
    log_dir = cli.trainer.log_dir
    name = type(cli.model).__name__
    dice = fitted.test["dice"]
    print("\n" + "=" * 78)
    print(f"{name} ({' + '.join(configs)}), trained on {cli.datamodule.described_training()}")
    print(f"Dice (%) per structure on the held-out phantom {cli.datamodule.hparams.target.upper()} volumes "
          f"(mean ± std over {len(cli.datamodule.test_records)} volumes):")
    print(format_table(dice))
    print(f"\ntrained {cli.trainer.global_step} iterations in {fit_seconds / 60:.1f} min ({fit_seconds:.0f} s); "
          f"total {total / 60:.1f} min")
    print(f"best checkpoint: {best}")
    print(f"logs, summary.json, per_case.csv: {log_dir}")
    print(f"figure: {log_dir}/samples/test.png")
    return {"name": f"{name} ({configs[-1]})", "dice": dice[cli.model.primary_predictor]["mean"],
            "seconds": total, "log_dir": log_dir}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mkdseg.demo", description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--recipe", help="an overlay of --config (a method preset such as recipe, or a yaml) trained and tested next")
    parser.add_argument("--run-dir", default="runs/demo", help="where logs, checkpoints and figures go")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI arguments, e.g. --trainer.max_steps=100")
    args, extra = parser.parse_known_args(argv)
    overrides = [*args.overrides, *extra]
    runs = [train_and_test([args.config], args.run_dir, overrides)]
    if args.recipe:
        # the recipe's run folder carries the overlay's name (runs/demo/recipe), not its method class's
        name = Path(args.recipe).stem
        runs.append(train_and_test([args.config, args.recipe], args.run_dir, [f"--trainer.logger.init_args.name={name}", *overrides]))
        print("\n" + "=" * 78 + "\nMean Dice (%) of each run's test-time predictor, same data, same held-out volumes:")
        for run in runs:
            mean = run["dice"]
            print(f"  {100 * mean['mean']:6.2f} ± {100 * mean['std']:5.2f}  {run['name']}  "
                  f"({run['seconds'] / 60:.1f} min)  {run['log_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
