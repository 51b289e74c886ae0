"""What one training iteration of each method beside the paper costs, measured interleaved in one process.

    python -m benchmarks.method_cost --root data_cache/abdomen64 --out benchmarks/results/method_cost
    python -m benchmarks.method_cost --phantom --image-size 32 --steps 3 --rounds 1   # the test suite's tiny run
    python -m benchmarks.method_cost --root data_cache/abdomen128 --image-size 128 --study recipe_ablation

Each setting (a ``mkdseg compare`` method preset: its method, options and data options; or with ``--study``, each
row of a compare study: its preset with the row's ``set`` overrides, labelled as the row) trains through
``Trainer.fit`` for ``--steps`` iterations per round, the settings taking turns within each round, so a
neighbour's load on a shared machine hits all of them alike. An iteration is the time between two
consecutive ``on_train_batch_start`` calls (Lightning's loop, data and re-styling included); the first two
of each fit are dropped. Reported: median seconds per iteration over all rounds, and the ratio to joint
training's, the reference the issue's "at most 2x joint training's CPU time" is about.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from mkdseg.compare.cli import preset_names, resolve_method
from mkdseg.compare.studies import load_study
from mkdseg.data import UnpairedSliceDataModule
from mkdseg.io import atomic_write_text
from mkdseg.presets import SIZES

#: the presets timed by default: the paper's MKD, joint training, the recipe and the semi-supervised options
SETTINGS = ("joint", "joint_gin", "mkd_gin", "recipe", "unimatch", "bcp", "dacs", "mix3", "selftrain")
SEGMENTOR_OPTIONS = ("seg_channels", "seg_strides", "seg_res_units", "lr_seg", "eval_batch_size")


class IterationTimer(L.Callback):
    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def seconds(self, skip: int = 2) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])][skip:]


def apply_overrides(options: dict, data: dict, overrides: tuple[str, ...]) -> None:
    """A study row's ``--model.init_args.X=V`` / ``--data.X=V`` overrides, into the method's and the data's options."""
    for override in overrides:
        key, _, value = override.removeprefix("--").partition("=")
        group, _, option = key.rpartition(".")
        targets = {"model.init_args": options, "data": data}
        if group not in targets:
            raise ValueError(f"method_cost: cannot apply {override!r}: only model.init_args.* and data.* options")
        targets[group][option] = yaml.safe_load(value)


def build(name: str, data: dict, segmentor: dict, overrides: tuple[str, ...] = ()):
    preset = resolve_method(name)
    config, method = preset.config, preset.model_class
    options = dict(config["model"].get("init_args") or {})
    data = {**data, **(config.get("data") or {})}
    apply_overrides(options, data, overrides)
    if options.get("pseudo_labeller") == "rounds":
        options["round_steps"] = 1  # time the rounds that pseudo-label, not the first (labelled slices only)
    dm = UnpairedSliceDataModule(**data)
    dm.prepare_data()
    model = method(image_size=data["image_size"], data_spec=dm.data_spec, **segmentor, **options)
    return model, dm


def measure(settings: dict[str, tuple[str, tuple[str, ...]]], data: dict, segmentor: dict, steps: int,
            rounds: int) -> dict[str, list[float]]:
    """Seconds per iteration of each setting ``{label: (method preset, overrides)}``, the settings taking turns."""
    L.seed_everything(0)
    names = list(settings)
    built = {name: build(method, data, segmentor, overrides) for name, (method, overrides) in settings.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            model, dm = built[name]
            timer = IterationTimer()
            trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 2, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                num_sanity_val_steps=0, callbacks=[timer], default_root_dir=tempfile.mkdtemp())
            trainer.fit(model, datamodule=dm)
            times[name] += timer.seconds()
    return times


def report(times: dict[str, list[float]], meta: dict) -> str:
    reference = statistics.median(times["joint"]) if times.get("joint") else None
    lines = ["| setting | s / iteration (median) | × joint training | iterations timed |", "|---|---|---|---|"]
    for name, values in times.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.2f}" if reference else ""
        lines.append(f"| {name} | {median:.4f} | {ratio} | {len(values)} |")
    return "\n".join([*lines, "", f"- command: `{meta['command']}`", f"- {meta['setup']}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.method_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data_cache/abdomen64", help="a slice cache (mkdseg preprocess)")
    parser.add_argument("--phantom", action="store_true", help="a generated phantom in a temporary folder instead")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-target", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="timed iterations per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=preset_names(), help="compare's method presets")
    parser.add_argument("--study", help="time the rows of this compare study instead (a shipped name or a yaml), and "
                                        "joint training as the reference")
    parser.add_argument("--out", type=Path, help="folder for results.md and times.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = yaml.safe_load((SIZES / "cpu.yaml").read_text())  # compare's cpu preset: what its runs train
    segmentor = {k: v for k, v in size["model"]["init_args"].items() if k in SEGMENTOR_OPTIONS}
    data = {**size["data"], "image_size": args.image_size, "n_target": args.n_target}
    if args.phantom:
        data.update(source="phantom", root=tempfile.mkdtemp(prefix="method-cost-"), target="ct", assistant="mr",
                    phantom_subjects=6, phantom_slices=8, n_val=1, batch_size=2, samples_per_epoch=8)
    else:
        data["root"] = args.root
    if args.study:
        settings = {"joint": ("joint", ())} | {row.label: (row.method, row.overrides) for row in load_study(args.study).rows}
    else:
        settings = {name: (name, ()) for name in args.settings}
    times = measure(settings, data, segmentor, args.steps, args.rounds)
    meta = {"command": "python -m benchmarks.method_cost " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
            "setup": f"{args.image_size} px, batch {data['batch_size']}, {args.threads} torch thread(s), {args.rounds} round(s) "
                     f"of {args.steps} iterations per setting, data {data['root']}"}
    text = report(times, meta)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.md", "# Cost of one training iteration, interleaved\n\n" + text + "\n")
        atomic_write_text(args.out / "times.json", json.dumps({"meta": meta, "seconds": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
