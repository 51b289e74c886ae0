"""How target-like is a translator's output on assistant subjects it never saw? The translator probe.

    python -m benchmarks.translation_quality --set data.source=phantom --set data.image_size=64 \\
        --steps 1200 --every 100 --seeds 0 1 --variant paper --variant resize:model.init_args.gen_upsampling=resize
    python -m benchmarks.translation_quality --set data.root=data_cache/abdomen128 --out benchmarks/results/probe_abdomen

Setup (``--size``, default ``mkdseg compare``'s cpu preset, with ``--set`` overrides; fold 0):

* the **held-out assistant subjects**: the last ``--held-out`` assistant subjects (sorted ids). Every
  variant trains with the others only (``data.n_assistant``), so the probe never scores a translator on
  its own training images.
* a **judge**: the target-only baseline segmentor trained on every labelled target subject of the
  training fold (``--judge-steps``). Its Dice on ``G_at(x_a)`` against the assistant labels is the
  "FCN score" of the CycleGAN paper: high means the synthetic target images look like the target
  modality *to a target segmentor*.
* the judge's **ceiling**: on the phantom, the judge on the held-out assistant subjects' own anatomy
  rendered in the target modality (the perfect translation); on real data, the judge on the held-out
  real target subjects of the test fold. The judge on the raw assistant images is the floor.

Each ``--variant NAME[:KEY=VALUE,...]`` (dotted config keys, YAML values) trains ``--method`` (a compare
preset with a translator, default ``mkd``) once per ``--seeds`` for ``--steps`` iterations. Every ``--every`` iterations the probe records the
iteration, the training's CPU seconds so far (process time, the probe's own time excluded) and the
judge score. On the phantom also, against the perfect translation: the error of each structure's mean
intensity (in target units, e.g. HU, through the phantom's window) and whether the target's
contrast orders hold in ``G_at(x_a)`` (``--contrast``; default the CT orders fat < MYO and AA > RA).

Output (``--out``): one ``<variant>-seed<s>.json`` per run, reused when it exists (delete it to redo),
``results.md`` (scores at equal iterations and at equal CPU seconds, mean ± std over seeds, and as a
fraction of the ceiling) and ``samples.png`` (held-out MR, ``G_at`` of each variant, the reference).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from mkdseg.compare.configs import resolve_method, resolve_size, stage_overrides
from mkdseg.compare.studies import cli_value
from mkdseg.data.datasets import SliceSet
from mkdseg.training import fit_and_test

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[1]

#: default contrast orders (darker, brighter) checked on the phantom; names are phantom tissues
CT_CONTRAST = ("fat<MYO", "RA<AA")


# -- scores ----------------------------------------------------------------------------------------
def pooled_dice(prediction: torch.Tensor, label: torch.Tensor) -> float:
    """Mean over foreground classes present in ``label`` of the Dice pooled over all slices."""
    scores = []
    for c in torch.unique(label).tolist():
        if c == 0:
            continue
        p, g = prediction == c, label == c
        scores.append(2 * (p & g).sum().item() / (p.sum() + g.sum()).item())
    return sum(scores) / len(scores)


@torch.no_grad()
def evaluate(net: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``net`` over ``images`` in eval mode and in batches; the training mode is restored after."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(images[i : i + batch]).float() for i in range(0, len(images), batch)])
    net.train(was_training)
    return out


def segment(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return evaluate(net, images).argmax(1)


def stacked(slices: SliceSet) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(slices[i] for i in range(len(slices))))
    return torch.stack(images), torch.stack(labels)


@dataclass
class PhantomReference:
    """The held-out assistant subjects as the target modality shows them (the perfect translation),
    their tissue maps, and the window that maps image values back to target units."""

    images: torch.Tensor  # [N, 1, H, W], like the cached slices
    tissues: np.ndarray  # [N, H, W] indices into phantom.TISSUES
    units_per_image_unit: float  # e.g. HU per unit of the [-1, 1] image range

    @classmethod
    def of(cls, records, target: str) -> "PhantomReference":
        from mkdseg.data.phantom import APPEARANCE, record_tissues, render_record_as

        images = np.concatenate([render_record_as(r, target) for r in records])
        tissues = np.concatenate([record_tissues(r) for r in records])
        lo, hi = APPEARANCE[target].window
        return cls(torch.from_numpy(images)[:, None], tissues, (hi - lo) / 2)

    def intensity_errors(self, fake: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, float]:
        """|mean of fake - mean of perfect| over each labelled structure, in target units: the contrast
        error (a per-voxel error would mostly measure the rendering's own noise and texture)."""
        errors = {}
        for c, name in enumerate(names, start=1):
            mask = labels[:, 0] == c if labels.ndim == 4 else labels == c
            if mask.any():
                errors[name] = abs(float(fake[:, 0][mask].mean() - self.images[:, 0][mask].mean())) * self.units_per_image_unit
        return errors

    def contrast_orders(self, fake: torch.Tensor, orders: list[str]) -> dict[str, bool]:
        """Whether each ``"darker<brighter"`` order of tissue means holds in ``fake``."""
        from mkdseg.data.phantom import TISSUE_INDEX

        image = fake[:, 0].numpy()
        mean = {name: float(image[self.tissues == TISSUE_INDEX[name]].mean())
                for order in orders for name in order.split("<")}
        return {order: mean[order.split("<")[0]] < mean[order.split("<")[1]] for order in orders}


class TranslationProbe(pl.Callback):
    """Records the module docstring's scores every ``every`` iterations, with the CPU seconds spent
    training so far (the probe's own time is subtracted)."""

    def __init__(self, judge, every: int, held_out: tuple, names: list[str], reference: PhantomReference | None,
                 contrast: list[str]):
        self.judge, self.every, self.names, self.reference, self.contrast = judge, every, names, reference, contrast
        self.x, self.y = held_out
        self.rows: list[dict] = []
        self.cpu_start = time.process_time()
        self.probe_cpu = 0.0

    def on_train_start(self, trainer, pl_module):
        self.cpu_start = time.process_time()  # after the trainer's setup
        self.record(pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self.record(pl_module, trainer.global_step)

    def record(self, module, step: int) -> None:
        start = time.process_time()
        row = {"iteration": step, "cpu_seconds": round(start - self.cpu_start - self.probe_cpu, 2)}
        row.update(self.measure(module))
        self.probe_cpu += time.process_time() - start
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def measure(self, module) -> dict:
        fake = evaluate(module.translator.g_at, self.x)
        row = {"judge": pooled_dice(segment(self.judge, fake), self.y)}
        if self.reference is not None:
            row["intensity_error"] = self.reference.intensity_errors(fake, self.y, self.names)
            row["contrast"] = self.reference.contrast_orders(fake, self.contrast)
        return row


# -- runs ------------------------------------------------------------------------------------------
def run_args(size: Path, method: str, steps: int, seed: int, run_dir: Path, sets: list[tuple[str, object]]) -> list[str]:
    """A probe run's LightningCLI arguments: the size, the method preset, the sets, fold 0 and the seed; no
    checkpoints, at most one validation (the probe measures; nothing is chosen)."""
    preset = resolve_method(method)
    return ["--config", str(size), "--config", str(preset.path), *stage_overrides(preset, steps),
            *(f"--{key}={cli_value(value)}" for key, value in sets), f"--seed_everything={seed}", "--data.fold=0",
            f"--data.sampler_seed={seed}", f"--trainer.default_root_dir={run_dir}", f"--trainer.val_check_interval={steps}",
            "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false", "--trainer.logger.init_args.name=logs"]


def fit(args: list[str], run_dir: Path, callbacks=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    return fit_and_test(args, callbacks=callbacks, test=False, config_out=run_dir / "config.yaml").cli


def parse_variant(text: str) -> tuple[str, list[tuple[str, object]]]:
    """``name`` or ``name:key=value,key=value`` (values as YAML)."""
    name, _, assignments = text.partition(":")
    sets = []
    for item in filter(None, assignments.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variant {text!r}: {item!r} is not KEY=VALUE")
        sets.append((key.strip(), yaml.safe_load(value)))
    return name, sets


@dataclass
class ProbeData:
    """What every variant is scored on: the judge, the held-out assistant slices and the references."""

    judge: torch.nn.Module
    n_assistant_train: int
    held_out: tuple[torch.Tensor, torch.Tensor]
    names: list[str]
    reference: PhantomReference | None
    scores: dict  # the judge's floor and ceiling


def prepare(size: Path, sets: list[tuple[str, object]], held_out: int, judge_steps: int, work: Path) -> ProbeData:
    sets = [*sets, ("data.n_target", None), ("data.n_val", 0)]
    cli = fit(run_args(size, "baseline", judge_steps, 0, work / "judge", sets), work / "judge")
    dm, judge = cli.datamodule, cli.model.seg
    assistants = dm.cache.volumes(dm.hparams.assistant)
    if not 0 < held_out < len(assistants):
        raise ValueError(f"--held-out {held_out}: the cache has {len(assistants)} {dm.hparams.assistant} subjects")
    held_records = assistants[len(assistants) - held_out :]
    x, y = stacked(SliceSet(dm.cache, held_records))
    real_x, real_y = stacked(SliceSet(dm.cache, dm.test_records))
    scores = {"judge_on_held_out_real_target": pooled_dice(segment(judge, real_x), real_y),
              "judge_on_raw_assistant": pooled_dice(segment(judge, x), y)}
    reference = None
    if dm.hparams.source == "phantom":
        reference = PhantomReference.of(held_records, dm.hparams.target)
        scores["judge_on_perfect_translation"] = pooled_dice(segment(judge, reference.images), y)
        scores["ceiling"] = scores["judge_on_perfect_translation"]
    else:
        scores["ceiling"] = scores["judge_on_held_out_real_target"]
    scores["held_out_assistant_subjects"] = [r.subject for r in held_records]
    print(json.dumps(scores), flush=True)
    return ProbeData(judge, len(assistants) - held_out, (x, y), list(cli.model.spec.structures), reference, scores)


def probe_run(data: ProbeData, size: Path, method: str, sets, steps: int, every: int, seed: int, run_dir: Path,
              contrast: list[str]) -> tuple[dict, torch.Tensor]:
    probe = TranslationProbe(data.judge, every, data.held_out, data.names, data.reference, contrast)
    start = time.perf_counter()
    sets = [*sets, ("data.n_assistant", data.n_assistant_train)]
    cli = fit(run_args(size, method, steps, seed, run_dir, sets), run_dir, [probe])
    if not probe.rows or probe.rows[-1]["iteration"] != cli.trainer.global_step:
        probe.record(cli.model, cli.trainer.global_step)
    samples = evaluate(cli.model.translator.g_at, sample_slices(data.held_out[0]))
    return {"rows": probe.rows, "wall_seconds": round(time.perf_counter() - start, 1)}, samples


def sample_slices(images: torch.Tensor, n: int = 4) -> torch.Tensor:
    return images[:: max(1, len(images) // n)][:n]


# -- tables ----------------------------------------------------------------------------------------
def interpolate(rows: list[dict], key: str, x: float, field: str = "judge") -> float | None:
    """``field`` at ``key`` = x by linear interpolation along one run's curve; None beyond its end."""
    points = [(r[key], r[field]) for r in rows]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return None


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"  # one seed: no spread to report
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_table(results: dict[str, list[dict]], key: str, marks: list[float], ceiling: float) -> list[str]:
    unit = "iterations" if key == "iteration" else "CPU s"
    lines = ["| variant | seeds | " + " | ".join(f"{m:g} {unit}" for m in marks) + " | at the last mark / ceiling |",
             "|---" * (len(marks) + 3) + "|"]
    for variant, runs in results.items():
        cells, last = [], None
        for m in marks:
            values = [v for v in (interpolate(r["rows"], key, m) for r in runs) if v is not None]
            cells.append(mean_std(values) + (f" (n={len(values)})" if 0 < len(values) < len(runs) else ""))
            if values:
                last = statistics.mean(values)
        ratio = f"{last / ceiling:.2f}" if last is not None else "–"
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def phantom_table(results: dict[str, list[dict]]) -> list[str]:
    """Final intensity error per structure and how many runs keep each contrast order."""
    first = next(iter(results.values()))[0]["rows"][-1]
    names, orders = list(first["intensity_error"]), list(first["contrast"])
    lines = ["| variant | " + " | ".join(f"\\|error\\| {n}" for n in names) + " | " + " | ".join(orders) + " |",
             "|---" * (1 + len(names) + len(orders)) + "|"]
    for variant, runs in results.items():
        finals = [r["rows"][-1] for r in runs]
        errors = [f"{statistics.mean(f['intensity_error'][n] for f in finals):.0f}" for n in names]
        holds = [f"{sum(f['contrast'][o] for f in finals)}/{len(finals)}" for o in orders]
        lines.append(f"| {variant} | " + " | ".join(errors + holds) + " |")
    return lines


def write_report(out: Path, scores: dict, results: dict[str, list[dict]], command: str) -> None:
    last_iter = min(r["rows"][-1]["iteration"] for runs in results.values() for r in runs)
    last_cpu = min(r["rows"][-1]["cpu_seconds"] for runs in results.values() for r in runs)
    iter_marks = [round(last_iter * f) for f in (0.25, 0.5, 0.75, 1.0)]
    cpu_marks = [math.floor(last_cpu * f / 10) * 10 for f in (0.25, 0.5, 0.75, 1.0)]  # down: within every run
    ceiling = scores["ceiling"]
    lines = [f"# Translator probe: judge Dice on {len(scores['held_out_assistant_subjects'])} held-out assistant subjects", "",
             f"Command: `{command}`", "",
             "Judge (target-only baseline, all labelled target subjects of fold 0): "
             + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in scores.items() if isinstance(v, float)) + ".",
             f"Held-out assistant subjects: {', '.join(scores['held_out_assistant_subjects'])}.", "",
             "## At equal iterations", "", *summary_table(results, "iteration", iter_marks, ceiling), "",
             "## At equal CPU seconds (training only, one thread)", "", *summary_table(results, "cpu_seconds", cpu_marks, ceiling), ""]
    if "intensity_error" in next(iter(results.values()))[0]["rows"][-1]:
        lines += ["## Against the perfect translation, at the end (phantom)", "",
                  "Error of each structure's mean intensity in G_at(x_a) against the perfect translation, in target units "
                  "(mean over seeds); runs in which "
                  "each contrast order holds in G_at(x_a).", "", *phantom_table(results), ""]
    runs = [f"- {v}: " + ", ".join(f"seed {r['seed']} {r['rows'][-1]['iteration']} it in {r['rows'][-1]['cpu_seconds']:.0f} CPU s"
                                 for r in rs) for v, rs in results.items()]
    lines += ["## Runs", "", *runs, ""]
    (out / "results.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="cpu", help="sizes and trainer: compare's cpu or gpu preset, or a yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run, the judge's too (YAML value), e.g. --set data.root=CACHE")
    parser.add_argument("--method", default="mkd", help="a compare preset (or yaml) whose model has g_at")
    parser.add_argument("--variant", action="append", help="NAME[:KEY=VALUE,...]; default: paper (no change)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=4, help="assistant subjects kept out of every variant's training")
    parser.add_argument("--judge-steps", type=int, default=600)
    parser.add_argument("--contrast", nargs="*", default=list(CT_CONTRAST), help="phantom tissue orders darker<brighter")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "translator_probe")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "translator_probe")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild results.md from the finished runs' JSON in --out (no training; samples.png kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    size = resolve_size(args.size)
    common = parse_variant("common:" + ",".join(args.sets))[1]
    variants = [parse_variant(v) for v in (args.variant or ["paper"])]

    command = "python -m benchmarks.translation_quality " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        return report_finished_runs(args.out, [name for name, _ in variants], args.seeds, command)

    data = prepare(size, common, args.held_out, args.judge_steps, args.work)
    results: dict[str, list[dict]] = {}
    samples = {"assistant (held out)": sample_slices(data.held_out[0])}
    for name, sets in variants:
        for seed in args.seeds:
            path = args.out / f"{name}-seed{seed}.json"
            if path.is_file():
                result = json.loads(path.read_text())
            else:
                curve, fakes = probe_run(data, size, args.method, common + sets, args.steps, args.every, seed,
                                         args.work / f"{name}-seed{seed}", args.contrast)
                result = {"variant": name, "seed": seed, "sets": [list(s) for s in sets], **data.scores, **curve}
                path.write_text(json.dumps(result, indent=1))
                torch.save(fakes, path.with_suffix(".pt"))
            results.setdefault(name, []).append(result)
        fakes_path = args.out / f"{name}-seed{args.seeds[0]}.pt"
        if fakes_path.is_file():
            samples[f"G_at, {name}"] = torch.load(fakes_path)
    if data.reference is not None:
        samples["perfect translation"] = sample_slices(data.reference.images)
    save_samples(samples, args.out / "samples.png")
    write_report(args.out, data.scores, results, command)
    print((args.out / "results.md").read_text())
    return 0


def report_finished_runs(out: Path, variants: list[str], seeds: list[int], command: str) -> int:
    """``--report-only``: the report of the runs already in ``out`` (variants run by separate invocations)."""
    results: dict[str, list[dict]] = {}
    for name in variants:
        for seed in seeds:
            path = out / f"{name}-seed{seed}.json"
            if path.is_file():
                results.setdefault(name, []).append(json.loads(path.read_text()))
    if not results:
        raise FileNotFoundError(f"--report-only: no finished run of {variants} x seeds {seeds} in {out}")
    first = next(iter(results.values()))[0]
    scores = {k: v for k, v in first.items() if k.startswith("judge_on_") or k in ("ceiling", "held_out_assistant_subjects")}
    write_report(out, scores, results, command)
    print((out / "results.md").read_text())
    return 0


def save_samples(rows: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2.1 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
