"""``make demo``: train the paper's MKD on the phantom with configs/demo.yaml, test it, print the Dice table;
with ``--recipe``, then train and test the recommended recipe on the same data and print both side by side.

Each run is ``mkdseg fit --config configs/demo.yaml [--config RECIPE]`` followed by ``mkdseg test`` on its
best checkpoint, in one process, with the timing and the paths of what it wrote.
"""

from __future__ import annotations

import argparse
import sys
import time

from mkdseg.cli import build_cli
from mkdseg.metrics import format_table


def train_and_test(configs: list[str], run_dir: str, overrides: list[str]) -> dict:
    """Fit, test the best checkpoint, print the Dice table; ``{"name", "dice", "seconds", "log_dir"}``."""
    start = time.perf_counter()
    args = [arg for config in configs for arg in ("--config", config)]
    sys.argv = sys.argv[:1]  # the CLI gets its arguments from us, not from our own command line
    cli = build_cli([*args, f"--trainer.default_root_dir={run_dir}", *overrides], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else None
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    total = time.perf_counter() - start
    log_dir = cli.trainer.log_dir
    name = type(cli.model).__name__
    dice = cli.model.evaluation_summary("test")["dice"]
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
    parser.add_argument("--recipe", help="an overlay of --config (e.g. configs/recipe.yaml) trained and tested next")
    parser.add_argument("--run-dir", default="runs/demo", help="where logs, checkpoints and figures go")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI arguments, e.g. --trainer.max_steps=100")
    args, extra = parser.parse_known_args(argv)
    overrides = [*args.overrides, *extra]
    runs = [train_and_test([args.config], args.run_dir, overrides)]
    if args.recipe:
        runs.append(train_and_test([args.config, args.recipe], args.run_dir, overrides))
        print("\n" + "=" * 78 + "\nMean Dice (%) of each run's test-time predictor, same data, same held-out volumes:")
        for run in runs:
            mean = run["dice"]
            print(f"  {100 * mean['mean']:6.2f} ± {100 * mean['std']:5.2f}  {run['name']}  "
                  f"({run['seconds'] / 60:.1f} min)  {run['log_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
