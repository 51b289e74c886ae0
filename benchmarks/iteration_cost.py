"""What one training iteration costs: the product's own iteration, built as ``mkdseg fit`` builds it, settings interleaved.

    python -m benchmarks.iteration_cost --root data_cache/abdomen128 --methods joint joint_gin mean_teacher_gin bcp dacs \\
        --steps 25 --rounds 3 --model.init_args.compile=false --out benchmarks/results/method_cost_128_recipe
    python -m benchmarks.iteration_cost --root data_cache/abdomen128 --study recipe_ablation --steps 25 --rounds 3 \\
        --model.init_args.compile=false --out benchmarks/results/method_cost_128_recipe_ablation
    python -m benchmarks.iteration_cost --configs configs/demo.yaml --steps 20 --rounds 3      # MKD at demo size, phantom
    python -m benchmarks.iteration_cost --configs configs/mkd.yaml --trainer.accelerator=gpu \\
        --trainer.precision=bf16-mixed --channels-last        # paper size on a GPU (benchmarks/gpu_check.sh)
    python -m benchmarks.iteration_cost --phantom --methods joint recipe --steps 2 --rounds 1 \\
        --model.init_args.compile=false --data.image_size=32        # a tiny run

**Settings.** ``--methods``: ``mkdseg compare``'s method presets, each ``--config <size> --config <method>`` (the
``cpu`` size preset unless ``--size``); ``--study``: the rows of a compare study (its method preset with the row's
overrides, labelled as the row) and joint training as the reference; ``--configs``: config files of their own
(``configs/demo.yaml``, ``configs/mkd.yaml``), each a setting. Arguments this script does not know
(``--trainer.precision=bf16-mixed``, ``--model.init_args.compile=false``, ...) go to every setting, after its own.

**What runs.** Each setting is built by :func:`mkdseg.training.build_cli`, the LightningCLI ``mkdseg fit`` and
``mkdseg compare``'s runs use (and :func:`mkdseg.compare.budget.measure_cost`), and trained by ``Trainer.fit`` for
``--skip + --steps`` iterations without validation: the method's own ``training_step``, its optimizers, its data
and batch-level augmentation. The settings take turns within each round, a fresh fit each, so that a neighbour's
load on a shared machine hits all of them alike; the first ``--skip`` iterations of each fit are dropped.

**What is measured, from outside the method.** An iteration is the time between two ``on_train_batch_start``
calls (a Lightning callback): its step, Lightning's hooks and logging, and the fetch of the next batch; wall
clock and this process's CPU time (which a neighbour's load does not inflate). Lightning's profiler hooks split
it: ``step`` is Lightning's ``run_training_batch`` (the method's ``training_step`` with its backward passes and
optimizer steps), ``data`` the training loader's fetch, and the rest (``loop``) Lightning's loop, callbacks and
logging. On a GPU every boundary synchronises the device, and the peak of allocated memory over the timed
iterations is recorded. Reported: medians per setting, and the CPU time per iteration against the reference
setting's (``--reference``, default the first), the median over rounds of the ratio within a round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.profilers import PassThroughProfiler

from mkdseg.io import atomic_write_text
from mkdseg.presets import preset_path

#: the presets timed by default: joint training, the paper's MKD with GIN, the recipe and the semi-supervised options
METHODS = ("joint", "joint_gin", "mkd_gin", "recipe", "unimatch", "bcp", "dacs", "mix3", "selftrain")
#: Lightning's profiler actions this splits an iteration by (matched by their ending)
STEP_ACTION, FETCH_ACTION = "run_training_batch", "train_dataloader_next"


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class StepAndFetchTimes(PassThroughProfiler):
    """Lightning's no-op profiler, but it keeps the wall-clock span of every ``run_training_batch`` and every
    training-loader fetch (``train_dataloader_next``), for :class:`IterationClock` to place in its iterations."""

    def __init__(self):
        super().__init__()
        self.device: torch.device | None = None
        self.spans: dict[str, list[tuple[float, float]]] = {STEP_ACTION: [], FETCH_ACTION: []}
        self._open: dict[str, float] = {}

    @staticmethod
    def _watched(action_name: str) -> str | None:
        return next((a for a in (STEP_ACTION, FETCH_ACTION) if action_name.endswith(a)), None)

    def start(self, action_name: str) -> None:
        if (action := self._watched(action_name)) is not None:
            self._open[action] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        action = self._watched(action_name)
        if action is not None and action in self._open:
            if action == STEP_ACTION:  # the step's kernels finish inside its span, not in the next one's
                _sync(self.device)
            self.spans[action].append((self._open.pop(action), time.perf_counter()))


class IterationClock(L.Callback):
    """Wall clock and process CPU time at every training batch's start; the images of each batch
    (its ``x_*`` slices); on a GPU, the peak of allocated memory from the first timed iteration on."""

    def __init__(self, skip: int, profiler: StepAndFetchTimes):
        self.skip, self.profiler = skip, profiler
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.images: list[int] = []
        self.device: torch.device | None = None
        self.peak_bytes: int | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.device = self.profiler.device = pl_module.device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(self.device)
        if len(self.wall) == self.skip and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.images.append(sum(v.shape[0] for k, v in batch.items() if k.startswith("x_") and torch.is_tensor(v) and v.ndim == 4))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)

    def iterations(self) -> list[dict]:
        """Each timed iteration: its wall and CPU seconds, images, and the seconds of its step, its data fetch and the
        rest (Lightning's loop, callbacks, logging)."""
        out = []
        for i in range(self.skip, len(self.wall) - 1):  # between two batch starts: the fit's end is not in any
            begin, end = self.wall[i], self.wall[i + 1]
            inside = {a: sum(b - s for s, b in spans if begin <= s < end) for a, spans in self.profiler.spans.items()}
            wall = end - begin
            out.append({"wall_s": wall, "cpu_s": self.cpu[i + 1] - self.cpu[i], "images": self.images[i],
                        "step_s": inside[STEP_ACTION], "data_s": inside[FETCH_ACTION],
                        "loop_s": max(0.0, wall - inside[STEP_ACTION] - inside[FETCH_ACTION])})
        return out


class ChannelsLastWeights(L.Callback):
    """``--channels-last``: the model's 4-D weights in channels-last layout, converted when the fit sets up (as the
    product's channels-last callback does; here so that this script depends on no module path of it)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)


def time_fit(arguments: list[str], steps: int, skip: int, channels_last: bool = False) -> dict:
    """One fit of ``arguments`` (``mkdseg fit``'s) for ``skip + steps`` iterations without validation, in a scratch
    folder: its timed iterations, peak GPU memory and the setting's parameter count."""
    from mkdseg.training import build_cli

    profiler = StepAndFetchTimes()
    clock = IterationClock(skip, profiler)
    with tempfile.TemporaryDirectory(prefix="iteration-cost-") as scratch:
        # one iteration more than timed: the last one's end is the next one's start, not the fit's end (where the
        # final checkpoint is written)
        cli = build_cli([*arguments, f"--trainer.max_steps={skip + steps + 1}", f"--trainer.val_check_interval={10 ** 9}",
                         "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
                         "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={scratch}"], run=False)
        cli.trainer.profiler = profiler
        cli.trainer.callbacks.extend([clock, *([ChannelsLastWeights()] if channels_last else [])])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        params = sum(p.numel() for p in cli.model.parameters())
    iterations = clock.iterations()
    if not iterations:
        raise RuntimeError(f"iteration_cost: no timed iteration ran ({' '.join(arguments)})")
    return {"iterations": iterations, "peak_bytes": clock.peak_bytes, "params": params}


def method_arguments(size: str, method: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """A compare run's configs: the size preset, the method preset, a study row's overrides. A self-training preset
    (``pseudo_labeller: rounds``) gets rounds of one iteration, so that the timed iterations pseudo-label (its first
    round trains on the labelled slices only)."""
    arguments = ["--config", size, "--config", method, *overrides]
    path = preset_path(method) or Path(method)
    options = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("init_args") or {} if path.is_file() else {}
    if options.get("pseudo_labeller") == "rounds":
        arguments.append("--model.init_args.round_steps=1")
    return arguments


def settings_of(args) -> dict[str, list[str]]:
    """``{label: mkdseg fit arguments}`` of the settings ``--methods``, ``--study`` or ``--configs`` name."""
    if args.configs:
        return {Path(c).stem: ["--config", c] for c in args.configs}
    if args.study:
        from mkdseg.compare.studies import load_study

        rows = {row.label: method_arguments(args.size, row.method, tuple(row.overrides)) for row in load_study(args.study).rows}
        return {"joint": method_arguments(args.size, "joint"), **rows}
    return {name: method_arguments(args.size, name) for name in args.methods}


def data_arguments(args) -> list[str]:
    labelled = [f"--data.n_target={args.n_target}"] if args.n_target is not None else []
    if args.phantom:  # a generated phantom in a temporary folder, at the tests' size
        return labelled + ["--data.source=phantom", f"--data.root={tempfile.mkdtemp(prefix='iteration-cost-phantom-')}",
                "--data.phantom_subjects=6", "--data.phantom_slices=8",
                "--data.n_val=1", "--data.batch_size=2", "--data.samples_per_epoch=8", "--trainer.log_every_n_steps=1"]
    return labelled + ([f"--data.root={args.root}"] if args.root else [])


def measure(settings: dict[str, list[str]], common: list[str], steps: int, rounds: int, skip: int,
            channels_last: bool = False) -> dict[str, list[dict]]:
    """Per setting, its timed fits (one per round), the settings taking turns within each round."""
    fits: dict[str, list[dict]] = {name: [] for name in settings}
    for r in range(rounds):
        for name, arguments in settings.items():
            fits[name].append(time_fit([*arguments, *common], steps, skip, channels_last))
            last = fits[name][-1]["iterations"]
            print(f"round {r + 1}/{rounds} {name}: {statistics.median(i['wall_s'] for i in last):.4f} s/it", flush=True)
    return fits


def summarise(fits: dict[str, list[dict]], reference: str) -> dict[str, dict]:
    """Medians over every timed iteration of a setting, and its CPU time per iteration against ``reference``'s (per
    round, the ratio of the two medians; then the median over rounds)."""
    def median_of(name: str, key: str, fit: dict | None = None) -> float:
        source = [fit] if fit is not None else fits[name]
        return statistics.median(i[key] for f in source for i in f["iterations"])

    out = {}
    for name, runs in fits.items():
        wall = median_of(name, "wall_s")
        ratios = [median_of(name, "cpu_s", a) / median_of(reference, "cpu_s", b) for a, b in zip(runs, fits[reference])]
        peaks = [f["peak_bytes"] for f in runs if f["peak_bytes"] is not None]
        out[name] = {"wall_s": wall, "cpu_s": median_of(name, "cpu_s"), "step_s": median_of(name, "step_s"),
                     "data_s": median_of(name, "data_s"), "loop_s": median_of(name, "loop_s"),
                     "images_per_iteration": median_of(name, "images"), "images_per_s": median_of(name, "images") / wall,
                     "vs_reference": statistics.median(ratios),
                     "iterations_timed": sum(len(f["iterations"]) for f in runs), "params": runs[0]["params"],
                     "peak_gib": max(peaks) / 2 ** 30 if peaks else None}
    return out


def report(summary: dict[str, dict], meta: dict) -> str:
    lines = [f"| setting | wall s / it | CPU s / it | × {meta['reference']} (CPU) | step | data | loop | images / s | "
             "peak GPU memory | iterations timed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        peak = f"{s['peak_gib']:.2f} GiB" if s["peak_gib"] is not None else ""
        lines.append(f"| {name} | {s['wall_s']:.4f} | {s['cpu_s']:.4f} | {s['vs_reference']:.2f} | "
                     f"{s['step_s'] / s['wall_s']:.1%} | {s['data_s'] / s['wall_s']:.1%} | {s['loop_s'] / s['wall_s']:.1%} | "
                     f"{s['images_per_s']:.1f} | {peak} | {s['iterations_timed']} |")
    return "\n".join([*lines, "",
                      "step: Lightning's `run_training_batch` (the method's `training_step`, backward passes and optimizer "
                      "steps); data: the training loader's fetch; loop: the rest of the iteration (Lightning's loop, "
                      "callbacks, logging); shares of the median wall time.", "",
                      f"- command: `{meta['command']}`", f"- {meta['setup']}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.iteration_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--methods", nargs="+", default=list(METHODS), help="compare's method presets (or method yamls)")
    chosen.add_argument("--study", help="the rows of this compare study (a shipped name or a yaml), and joint training")
    chosen.add_argument("--configs", nargs="+", help="config files, each a setting of its own (no size preset)")
    parser.add_argument("--size", default="cpu", help="the size preset before each method (with --methods, --study)")
    parser.add_argument("--root", help="data.root: a slice cache (mkdseg preprocess)")
    parser.add_argument("--phantom", action="store_true", help="a generated phantom in a temporary folder (tiny runs)")
    parser.add_argument("--n-target", type=int, default=None, help="data.n_target (default: the configs')")
    parser.add_argument("--steps", type=int, default=30, help="timed iterations per setting and round")
    parser.add_argument("--skip", type=int, default=2, help="untimed iterations first in each fit (allocation, compiling)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--reference", help="the setting the others are compared with (default: the first)")
    parser.add_argument("--channels-last", action="store_true", help="the model's weights in channels-last layout")
    parser.add_argument("--out", type=Path, help="folder for results.md and results.json")
    args, extra = parser.parse_known_args(argv)
    if any(not a.startswith("--") for a in extra):
        parser.error(f"unrecognised arguments: {' '.join(a for a in extra if not a.startswith('--'))} "
                     "(mkdseg fit options go as --key=value)")
    torch.set_num_threads(args.threads)
    settings = settings_of(args)
    reference = args.reference or next(iter(settings))
    if reference not in settings:
        parser.error(f"--reference {reference!r} is none of the settings {list(settings)}")
    fits = measure(settings, [*data_arguments(args), *extra], args.steps, args.rounds, args.skip, args.channels_last)
    summary = summarise(fits, reference)
    command = "python -m benchmarks.iteration_cost " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "reference": reference,
            "setup": f"{args.rounds} round(s) of {args.steps} timed iterations per setting after {args.skip}, "
                     f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, lightning {L.__version__}"}
    text = report(summary, meta)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.md", "# What one training iteration costs, interleaved\n\n" + text + "\n")
        atomic_write_text(args.out / "results.json", json.dumps(
            {"meta": meta, "settings": settings, "summary": summary,
             "seconds": {n: [round(i["wall_s"], 4) for f in runs for i in f["iterations"]] for n, runs in fits.items()}},
            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
