"""``make demo``: train MKD on the phantom with configs/demo.yaml, test it, print the Dice table.

Equivalent to ``mkdseg fit --config configs/demo.yaml`` followed by ``mkdseg test`` on the best
checkpoint, in one process, with the timing and the paths of what it wrote.
"""

from __future__ import annotations

import argparse
import sys
import time

from mkdseg.cli import build_cli
from mkdseg.metrics import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mkdseg.demo", description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--run-dir", default="runs/demo", help="where logs, checkpoints and figures go")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI arguments, e.g. --trainer.max_steps=100")
    args, extra = parser.parse_known_args(argv)
    start = time.perf_counter()
    sys.argv = sys.argv[:1]  # the CLI gets its arguments from us, not from our own command line
    cli = build_cli(
        ["--config", args.config, f"--trainer.default_root_dir={args.run_dir}", *args.overrides, *extra],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else None
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    total = time.perf_counter() - start
    log_dir = cli.trainer.log_dir
    print("\n" + "=" * 78)
    print(f"Dice (%) per structure on the held-out phantom {cli.datamodule.hparams.target.upper()} volumes "
          f"(mean ± std over {len(cli.datamodule.test_records)} volumes):")
    print(format_table(cli.model.evaluation_summary("test")["dice"]))
    print(f"\ntrained {cli.trainer.global_step} iterations in {fit_seconds / 60:.1f} min ({fit_seconds:.0f} s); "
          f"total {total / 60:.1f} min")
    print(f"best checkpoint: {best}")
    print(f"logs, summary.json, per_case.csv: {log_dir}")
    print(f"figure: {log_dir}/samples/test.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
