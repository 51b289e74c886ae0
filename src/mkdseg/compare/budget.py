"""Equal cost: an iteration budget per method from a budget in CPU-minutes per run.

A user with one machine and a deadline meets methods at equal *minutes*, and a pseudo-labelling iteration
costs two to three of joint training's. Lightning's ``max_time`` would stop each run on the clock, which makes
a run unrepeatable (a neighbour's load moves where it stops); instead each method's CPU seconds per iteration
are measured once (a short fit of the same configuration, timed in this process's CPU time, so that another
process's load does not inflate it) and turned into a fixed iteration count. The measurements are kept in the
comparison's ``iteration_costs.json``: a later invocation plans the same iteration counts, so its finished runs
are reused and every run repeats exactly.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from mkdseg.io import atomic_write_text
from mkdseg.training import build_cli

#: iteration budgets are multiples of this, so that validating four times (every budget / 4) lands on the last one
BUDGET_QUANTUM = 20
#: validations per run under a minutes budget, the last at its final iteration (the ``cpu`` preset's 4)
VALIDATIONS_PER_RUN = 4


class IterationCPUTimer(L.Callback):
    """Process CPU seconds at every training batch's start: an iteration is the time between two of them
    (data, re-styling, forward, backward and optimizer steps included)."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.process_time())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.process_time())

    def seconds(self, skip: int) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])][skip:]


def iterations_for(minutes: float, cpu_s_per_iteration: float) -> int:
    """The iteration budget that ``minutes`` CPU-minutes of training buy, a multiple of :data:`BUDGET_QUANTUM`
    (at least one quantum).

    >>> iterations_for(10, 0.5), iterations_for(10, 0.33), iterations_for(0.01, 1.0)
    (1200, 1820, 20)
    """
    if minutes <= 0 or cpu_s_per_iteration <= 0:
        raise ValueError(f"--minutes and the cost per iteration must be > 0, got {minutes} and {cpu_s_per_iteration}")
    count = round(minutes * 60 / cpu_s_per_iteration / BUDGET_QUANTUM) * BUDGET_QUANTUM
    return max(BUDGET_QUANTUM, count)


def measure_cost(cli_args: list[str], iterations: int = 24, skip: int = 4) -> float:
    """Median CPU seconds per training iteration of the run ``cli_args`` (its ``--config``s and overrides), from a
    fit of ``skip + iterations`` iterations without validation, in a scratch folder, at this process's thread
    count. The first ``skip`` iterations (allocation, first-touch) are dropped."""
    timer = IterationCPUTimer()
    with tempfile.TemporaryDirectory(prefix="mkdseg-cost-") as scratch:
        args = [*cli_args, f"--trainer.max_steps={skip + iterations}", f"--trainer.val_check_interval={10 ** 9}",
                f"--trainer.default_root_dir={scratch}", "--trainer.enable_progress_bar=false"]
        cli = build_cli(args, run=False)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = timer.seconds(skip)
    if not seconds:
        raise RuntimeError(f"measuring the cost per iteration: no iteration ran (args: {' '.join(cli_args)})")
    return statistics.median(seconds)


class CostTable:
    """Measured CPU seconds per iteration by run configuration (a run's key without its draw), kept in a json file:
    measured once, then read, so that the iteration budgets a minutes budget plans do not move between invocations."""

    def __init__(self, path: Path):
        self.path = path
        self.costs: dict[str, dict] = {}
        if path.is_file():
            try:
                self.costs = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not a table of iteration costs ({e}); delete it to measure again") from e

    def has(self, key: str) -> bool:
        return key in self.costs

    def cost(self, key: str, cli_args: list[str], threads: int | None) -> float:
        """CPU seconds per iteration of the configuration ``key``: the table's, or measured now (with ``threads``
        torch threads, the runs' own count) and saved."""
        if key not in self.costs:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                print(f"{key}: measuring its CPU time per iteration ...", flush=True)
                seconds = measure_cost(cli_args)
            finally:
                torch.set_num_threads(before)
            self.costs[key] = {"cpu_s_per_iteration": round(seconds, 4), "threads": threads or before}
            atomic_write_text(self.path, json.dumps(self.costs, indent=1, sort_keys=True) + "\n")
        return float(self.costs[key]["cpu_s_per_iteration"])
