"""One training run of a comparison, and many in parallel processes.

A run is a LightningCLI config (config files merged by jsonargparse in order, then dotted ``--key=value``
overrides) for one fold and seed, trained in its own folder: fit, then test of the weights of its best
validation (``val/dice`` on ``data.n_val`` subjects of the training fold: never test subjects) and of its
final weights. Its ``result.json`` is written last and atomically: a folder with one is finished and is
reused by every later invocation that asks for the same run; a folder without one is redone.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml

from mkdseg.callbacks import MetricHistory
from mkdseg.io import atomic_write_text
from mkdseg.training import fit_and_test


@dataclass(frozen=True)
class RunSpec:
    """A run: ``name`` (the method's), its configs and overrides, the draw (fold, seed) and where runs live:
    ``<runs_dir>/<key>/fold<f>-seed<s>``, finished once its ``result.json`` is there.

    Its key is ``<name>-<hash of the configs' contents and the overrides>``: what the configs say, not how they say
    it, so a comment edited in a preset leaves its finished runs reusable."""

    name: str
    configs: tuple[Path, ...]
    overrides: tuple[str, ...]
    fold: int
    seed: int
    runs_dir: Path
    max_steps: int

    @cached_property
    def key(self) -> str:
        # read once, when the study plans the run: a config edited while the study trains must not move the
        # folder of a run under it (its config.yaml and logs in one folder, its result.json in another)
        contents = [yaml.safe_load(Path(c).read_text()) for c in self.configs] + sorted(self.overrides)
        return f"{self.name}-{hashlib.sha1(json.dumps(contents, sort_keys=True).encode()).hexdigest()[:8]}"

    @property
    def dir(self) -> Path:
        return self.runs_dir / self.key / f"fold{self.fold}-seed{self.seed}"

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    def cli_args(self) -> list[str]:
        args = [a for c in self.configs for a in ("--config", str(c))]
        return [*args, *self.overrides, f"--seed_everything={self.seed}", f"--data.fold={self.fold}",
                f"--data.sampler_seed={self.seed}", f"--trainer.default_root_dir={self.dir}",
                "--trainer.logger.init_args.name=logs"]

    def to_record(self) -> dict:
        """The run as json, with its planned key: what a SLURM job reads to train it (:mod:`mkdseg.compare.job`)."""
        return {"name": self.name, "configs": [str(c) for c in self.configs], "overrides": list(self.overrides),
                "fold": self.fold, "seed": self.seed, "runs_dir": str(self.runs_dir), "max_steps": self.max_steps,
                "key": self.key}

    @classmethod
    def from_record(cls, record: dict) -> RunSpec:
        spec = cls(record["name"], tuple(Path(c) for c in record["configs"]), tuple(record["overrides"]),
                   int(record["fold"]), int(record["seed"]), Path(record["runs_dir"]), int(record["max_steps"]))
        spec.__dict__["key"] = record["key"]  # the key the study planned (see `key`), as unpickling keeps it
        return spec


class RunIndex:
    """Every finished run of a comparison, one ``result.json`` per line of ``OUT/finished_runs.jsonl``: the compact
    record a study keeps when its run folders (checkpoints, logs) are gone (the repository keeps a study's runs.csv). A run is finished when its
    folder holds ``result.json`` or the index holds its (key, fold, seed); finished folders are indexed on load."""

    def __init__(self, path: Path, specs: list[RunSpec] = ()):
        self.path = path
        self.results: dict[tuple[str, int, int], dict] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    result = json.loads(line)
                    self.results[(result["key"], int(result["fold"]), int(result["seed"]))] = result
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{path}:{number}: not a finished run's result ({e})") from e
        on_disk = [s for s in specs if self._id(s) not in self.results and s.result_path.is_file()]
        for spec in on_disk:
            self.results[self._id(spec)] = json.loads(spec.result_path.read_text())
        if on_disk:
            self.save()

    @staticmethod
    def _id(spec: RunSpec) -> tuple[str, int, int]:
        return spec.key, spec.fold, spec.seed

    def get(self, spec: RunSpec) -> dict | None:
        return self.results.get(self._id(spec))

    def add(self, spec: RunSpec, result: dict) -> None:
        self.results[self._id(spec)] = result
        self.save()

    def save(self) -> None:
        lines = (json.dumps(r, allow_nan=True, separators=(",", ":")) for _, r in sorted(self.results.items()))
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))


def run_one(spec: RunSpec) -> dict:
    """Fit and test one run in this process; write and return its ``result.json``."""
    if spec.dir.exists():  # an unfinished earlier attempt
        shutil.rmtree(spec.dir)
    spec.dir.mkdir(parents=True)
    start = time.perf_counter()
    history = MetricHistory(str(spec.dir / "logs" / "val_history.json"))  # result.json keeps it as val_curve
    # a comparison tables Dice only: surface distances of whole scans would be most of a run's test time (and of a
    # barely trained smoke run's, whose scattered voxels make every surface large), recorded nowhere
    fitted = fit_and_test(spec.cli_args(), callbacks=[history], surface_distances=False,
                          config_out=spec.dir / "config.yaml")
    cli, best = fitted.cli, fitted.best
    result = {
        "config": spec.name,
        "key": spec.key,
        "method": type(cli.model).__module__ + "." + type(cli.model).__name__,
        "fold": spec.fold,
        "seed": spec.seed,
        "primary_predictor": cli.model.primary_predictor,
        "global_step": cli.trainer.global_step,
        "fit_s": round(fitted.fit_s, 1),
        "fit_cpu_s": round(fitted.fit_cpu_s, 1),
        "total_s": round(time.perf_counter() - start, 1),
        "test_volumes": len(cli.datamodule.test_records),
        "training_images": cli.datamodule.described_training(),  # which images the method saw
        "dice": dice_means(fitted.test["dice"]),
        "torch_threads": torch_threads(),
    }
    if best is not None:
        result.update(dice_last=dice_means(fitted.test_last["dice"]), tested_weights="best validation",
                      best_val_dice=float(best.best_model_score), best_checkpoint=Path(best.best_model_path).name)
    try:  # the last validation of the fit: what choosing among runs may look at (test subjects never are)
        validation = cli.model.evaluation_summary("val")
        result.update(val_step=validation["step"], val_dice=dice_means(validation["dice"]),
                      val_curve=validation_curve(history.history, list(validation["dice"])))
    except LookupError:
        pass  # no validation ran within max_steps
    atomic_write_text(spec.result_path, json.dumps(result, indent=1, allow_nan=True))
    return result


def validation_curve(history: dict[str, list[float]], predictors: list[str]) -> dict[str, list[float]]:
    """``{"step": [iterations], predictor: [mean validation Dice]}`` of every validation of the fit."""
    curve = {"step": history.get("step", [])}
    curve.update({p: history[f"val/dice_{p}"] for p in predictors if f"val/dice_{p}" in history})
    return curve


def tested_validation(result: dict, predictor: str) -> dict:
    """``{"val_dice", "val_step"}`` of the weights a run tested: its last validation, or for a run that tested
    its best-validation weights (``best-step=N.ckpt``) that one, so that choosing among runs sees the tested weights."""
    if "best_checkpoint" not in result:
        return {"val_dice": result.get("val_dice", {}).get(predictor, {}).get("mean"), "val_step": result.get("val_step")}
    step = int(Path(result["best_checkpoint"]).stem.split("best-step=")[-1])
    curve = result["val_curve"]
    return {"val_dice": curve[predictor][curve["step"].index(step)], "val_step": step}


def curve_cell(curve: dict[str, list[float]], predictor: str) -> str:
    """A predictor's validation curve as one runs.csv cell: ``"step:dice step:dice ..."``."""
    return " ".join(f"{step}:{value:.4f}" for step, value in zip(curve.get("step", []), curve.get(predictor, [])))


def dice_means(dice: dict) -> dict:
    """``{predictor: {"mean": ..., structure: ...}}``: the per-volume means of an evaluation summary."""
    return {predictor: {s: entry[s]["mean"] for s in ("mean",) + tuple(k for k in entry if k != "mean")}
            for predictor, entry in dice.items()}


def torch_threads() -> int:
    return torch.get_num_threads()


def machine_description() -> str:
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU(s), load average "
            f"{os.getloadavg()[0]:.1f} at the end, Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread(s)), {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")


def _run_safely(spec) -> dict:
    """``run_one``, with a failure returned as ``{"error": traceback}``: one failed run must not lose the others."""
    try:
        return run_one(spec)
    except Exception:  # noqa: BLE001 - returned, not raised: the caller records it and carries on
        return {"error": traceback.format_exc()}


def run_with_threads(spec: RunSpec, threads: int | None) -> dict:
    """``_run_safely`` with ``threads`` torch threads (in this process or a pool's), then the process's count again.
    The count is part of a run's arithmetic (the order of a sum's terms), so a run repeats only at the same count."""
    if not threads:
        return _run_safely(spec)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_safely(spec)
    finally:
        torch.set_num_threads(before)


def train(pending: list[tuple[str, object]], jobs: int, threads: int | None) -> Iterator[tuple[str, object, dict]]:
    """Yield ``(tag, spec, result)`` per run as it finishes; ``result`` is ``{"error": traceback}`` for a
    failed run (also written to the run's ``error.txt``), so that one failure never stops the others.

    ``jobs`` > 1 trains that many runs at a time, each in its own spawned process with ``threads`` torch
    threads: on a small CPU, J processes of one thread beat one process of J threads (the threads of one
    small-image step spend their time waiting for each other)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1:
        for tag, spec in pending:
            print(f"{tag}: training {spec.max_steps} iterations ...", flush=True)
            yield tag, spec, recorded(spec, run_with_threads(spec, threads))
        return
    # spawn, not fork: a forked child inherits torch's thread pools and any lock held at fork time
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {}
        for tag, spec in pending:
            print(f"{tag}: queued, {spec.max_steps} iterations", flush=True)
            futures[pool.submit(run_with_threads, spec, threads)] = (tag, spec)
        for future in as_completed(futures):
            tag, spec = futures[future]
            try:
                result = future.result()
            except Exception:  # noqa: BLE001 - e.g. a worker killed by the OOM killer
                result = {"error": traceback.format_exc()}
            yield tag, spec, recorded(spec, result)


def recorded(spec: RunSpec, result: dict) -> dict:
    """``result``; a failure's traceback also written to the run's ``error.txt``, which ``"see"`` names."""
    if "error" in result:
        spec.dir.mkdir(parents=True, exist_ok=True)
        (spec.dir / "error.txt").write_text(result["error"])
        return {**result, "see": str(spec.dir / "error.txt")}
    return result
