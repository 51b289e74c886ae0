"""Reproduce the paper's experiments (Li et al., AAAI 2020, Tables 1-4) as one resumable harness.

    python -m benchmarks.reproduce table1                      # all methods, CPU phantom, 2 folds x 2 seeds
    python -m benchmarks.reproduce table2 --folds 1 --seeds 2  # MKD ablations, fewer runs
    python -m benchmarks.reproduce table1 --base configs/bench/mmwhs.yaml --out benchmarks/results/mmwhs_table1
                                                               # the paper's setting on MM-WHS (a GPU)

Studies
    table1  every method: baseline, fine-tune, joint training, X-shape, offline translation (Jiang),
            online translation (Zhang) and its two-segmentor ensemble, MKD's S_syn, S_real and ensemble.
    table2  MKD ablations: full, without image alignment, without syn->real KD, without real->syn KD;
            on the phantom also two controls with a perfect translator (the assistant subjects' own anatomy
            rendered as the target modality): MKD (``mkd_oracle_translation``) and one segmentor on
            real + perfectly translated images (``offline_oracle_translation``).
    table3  MKD with n_assistant assistant subjects (the paper's 5, 10, 20 of 20 MR, scaled to the data's
            assistant subject count: 3, 6, 12 on a 12-subject phantom), plus the baseline for reference.
    table4  table1's methods with the direction swapped (target MR, assistant CT).
    beyond  issue 23's options beside the paper, each paired against joint training: randomised appearance
            (``data.appearance``: GIN, class-wise location-scale) as an option of joint training, fine-tune,
            the baseline and MKD without alignment (MKD whose image alignment module is GIN); the shared-kernel
            segmentor with prototype KD; a mean teacher on the unlabelled target subjects.
            ``--set data.target=mri --set data.assistant=ct`` swaps the direction, ``--set data.n_target=6``
            gives more labels.

Configs
    ``--config-dir`` (default ``configs/bench``) holds ``base.yaml`` (trainer, data and every network
    size option) and one yaml per method (``model.class_path`` and the method's own options); ``--base``
    replaces the base. A run's config is base + method yaml + the study's overrides + ``--set`` + fold
    and seed (``data.fold``, ``seed_everything`` and ``data.sampler_seed``); ``model.init_args`` keeps the
    options the method's class accepts. It is written to the run's folder and given to LightningCLI
    (``mkdseg.cli.build_cli``) in this process: fit, then test of the final weights on the held-out fold.
    ``--test-weights best`` tests instead the weights of the fit's best validation (``val/dice``, the method's
    primary predictor, on ``data.n_val`` subjects of the training fold), as ``configs/mkd.yaml``'s checkpoint
    gives a user; the final weights' test stays in ``result.json`` as ``dice_last``. Its runs are other runs
    (the checkpoint callback is part of the config and so of the run's folder name).

Iteration budget
    ``trainer.max_steps`` (or ``--steps``) is N, the iterations of every method's final stage. A method
    with a first stage (``FineTune.pretrain_steps``, ``OfflineTranslation.translation_steps``) gets N
    iterations for it as well unless its yaml sets the stage length, and ``max_steps = N + stage``: every
    test-time segmentor trains for N iterations and every translator for N.

Resuming
    A run lives in ``<runs-dir>/<method>-<hash of its config>/fold<f>-seed<s>/``; once its
    ``result.json`` exists it is not run again, whatever the study that asks for it (table 2's full MKD
    is table 1's MKD). Delete the folder to redo a run.

Parallel runs
    ``--jobs J`` trains J runs at a time, each in its own spawned process with ``--threads`` torch
    threads. On a small CPU, J processes of one thread each beat one process of J threads (the
    threads of one small-image step spend their time waiting for each other).

Output (``--out``, default ``benchmarks/results/<study>``)
    ``results.md``: mean Dice then per structure, one row per method, mean ± std over folds x seeds of
    each run's mean over test volumes; ``runs.csv``: every run and predictor; ``dice.png``: bar chart.
    Each run's ``result.json`` holds its test Dice per predictor and structure and, when the data set
    validation subjects apart (``data.n_val``), its last validation (``val_dice``, ``val_step``) and every
    validation of the fit (``val_curve``): what ``benchmarks.select_seeds`` chooses among seeds on.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mkdseg.labels import MMWHS

REPO = Path(__file__).resolve().parents[1]
#: first-stage lengths: a method accepting one of these trains N iterations + this many
STAGE_KEYS = ("pretrain_steps", "translation_steps")


# -- studies ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One table row: predictor ``predictor`` of method config ``config`` (a yaml name), with overrides."""

    label: str
    config: str
    predictor: str
    overrides: tuple[tuple[str, object], ...] = ()
    paper: float | None = None  # the paper's mean Dice on MM-WHS CT, where it reports one


@dataclass
class Study:
    name: str
    title: str
    rows: list[Row]
    overrides: dict = field(default_factory=dict)  # for every row
    reference: str = "Baseline (target only)"  # the row label every other row is paired against


def _table1_rows() -> list[Row]:
    return [
        Row("Baseline (target only)", "baseline", "seg", paper=87.06),
        Row("Fine-tune", "finetune", "seg", paper=87.69),
        Row("Joint training", "joint", "seg", paper=87.43),
        Row("X-shape (Valindria et al.)", "xshape", "seg", paper=87.67),
        Row("Offline translation (Jiang et al.)", "offline_translation", "seg", paper=87.65),
        Row("Online translation (Zhang et al.)", "online_translation", "seg", paper=88.50),
        Row("Zhang et al. + 2-segmentor ensemble", "online_translation_ensemble", "ens"),
        Row("MKD: S_syn", "mkd", "syn", paper=88.49),
        Row("MKD: S_real", "mkd", "real", paper=89.47),
        Row("MKD: ensemble", "mkd", "ens", paper=90.12),
    ]


def _table2_rows(phantom: bool) -> list[Row]:
    variants = [
        ("MKD (full)", "mkd", ()),
        ("w/o image alignment", "mkd_no_alignment", ()),
        ("w/o syn→real KD (λ_kd1=0)", "mkd", (("model.init_args.lambda_kd_real", 0.0),)),
        ("w/o real→syn KD (λ_kd2=0)", "mkd", (("model.init_args.lambda_kd_syn", 0.0),)),
    ]
    if phantom:  # only the phantom can render an assistant subject in the target modality
        variants.append(("control: MKD, perfect translation (phantom oracle)", "mkd_oracle_translation", ()))
    rows = [
        Row(f"{label}: {name}", config, predictor, overrides)
        for label, config, overrides in variants
        for name, predictor in (("S_syn", "syn"), ("S_real", "real"), ("ensemble", "ens"))
    ]
    if phantom:
        rows.append(Row("control: one segmentor on real + perfectly translated (phantom oracle)", "offline_oracle_translation", "seg"))
    return rows


def _table3_rows(n_values: list[int]) -> list[Row]:
    rows = [Row("Baseline (no assistant data)", "baseline", "seg")]
    for n in n_values:
        over = (("data.n_assistant", n),)
        rows += [Row(f"MKD, {n} assistant subjects: {name}", "mkd", p, over) for name, p in (("S_syn", "syn"), ("S_real", "real"), ("ensemble", "ens"))]
    return rows


def _restyled(kind: str, on: str) -> tuple[tuple[str, object], ...]:
    return (("data.appearance", kind), ("data.appearance_on", on))


def _beyond_rows() -> list[Row]:
    """Issue 23's options against joint training, each beside the same method without it: randomised
    appearance, the shared-kernel segmentor, the unlabelled target subjects (a mean teacher). Runs train
    in this order: the reference and the likeliest recipes first."""
    gin_a, gin_both, gin_t = _restyled("gin", "assistant"), _restyled("gin", "both"), _restyled("gin", "target")
    return [
        Row("Joint training", "joint", "seg"),
        Row("Joint + GIN on assistant", "joint", "seg", gin_a),
        *(Row(f"MKD, GIN alignment: {name}", "mkd_no_alignment", p, gin_a)
          for name, p in (("S_syn", "syn"), ("S_real", "real"), ("ensemble", "ens"))),
        Row("Mean teacher on unlabelled target + GIN on assistant", "mean_teacher", "teacher", gin_a),
        Row("Mean teacher on unlabelled target, GIN student view + GIN on assistant", "mean_teacher", "teacher",
            (*gin_a, ("model.init_args.student_view", "gin"))),
        Row("Mean teacher on unlabelled target (joint)", "mean_teacher", "teacher"),
        Row("Shared kernels + prototype KD (Dou et al.)", "shared_kernel", "seg"),
        Row("Shared kernels + prototype KD + GIN on assistant", "shared_kernel", "seg", gin_a),
        Row("Joint + GIN on both", "joint", "seg", gin_both),
        Row("MKD w/o alignment: ensemble", "mkd_no_alignment", "ens"),
        Row("Joint + class-wise location-scale on assistant", "joint", "seg", _restyled("class_location_scale", "assistant")),
        Row("Baseline (target only)", "baseline", "seg"),
        Row("Baseline + GIN on target", "baseline", "seg", gin_t),
        Row("Fine-tune", "finetune", "seg"),
        Row("Fine-tune + GIN on assistant", "finetune", "seg", gin_a),
    ]


def make_study(name: str, base: dict, n_assistant: list[int] | None = None) -> Study:
    data = base.get("data", {})
    if name == "table1":
        return Study(name, "Table 1: comparison with other methods", _table1_rows())
    if name == "table2":
        return Study(name, "Table 2: ablation of MKD's components", _table2_rows(data.get("source", "phantom") == "phantom"))
    if name == "table3":
        if not n_assistant:
            total = data.get("phantom_subjects", 20) if data.get("source", "phantom") == "phantom" else 20
            n_assistant = sorted({max(1, round(v * total / 20)) for v in (5, 10, 20)})
        return Study(name, "Table 3: amount of assistant-modality data", _table3_rows(n_assistant))
    if name == "table4":
        target, assistant = data.get("assistant", "mr"), data.get("target", "ct")
        overrides = {"data.target": target, "data.assistant": assistant}
        if data.get("source", "phantom") == "phantom":  # a phantom cache is generated for one direction
            overrides["data.root"] = f"{data.get('root', 'data_cache/phantom')}_{target}_target"
        rows = [Row(r.label, r.config, r.predictor, r.overrides) for r in _table1_rows()]  # the paper's numbers are for CT
        return Study(name, f"Table 4: direction swapped ({target.upper()} target, {assistant.upper()} assistant)", rows, overrides)
    if name == "beyond":
        return Study(name, "Beyond the paper, against joint training", _beyond_rows(), reference="Joint training")
    raise ValueError(f"unknown study {name!r}; choose one of {STUDY_NAMES}")


STUDY_NAMES = ("table1", "table2", "table3", "table4", "beyond")


# -- configs -------------------------------------------------------------------------------------
def load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    return yaml.safe_load(path.read_text()) or {}


def merge(base: dict, update: dict) -> dict:
    """Deep merge: dicts merge key by key, anything else in ``update`` replaces."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_dotted(config: dict, key: str, value) -> None:
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key}: {p} is not a section")
    node[leaf] = value


def parse_set(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. trainer.max_steps=100), got {item!r}")
        out.append((key, yaml.safe_load(value)))
    return out


def method_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.class_path {class_path!r} cannot be imported: {e}") from e


def accepted_init_args(cls: type) -> set[str]:
    """Names ``cls(...)`` accepts, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def compose(
    base: dict, method: dict, overrides: list[tuple[str, object]] = (), sets: list[tuple[str, object]] = (), steps: int | None = None
) -> dict:
    """The full LightningCLI config of one method (before fold and seed): see the module docstring.

    ``overrides`` (the study's) are the method's own: a model option its class lacks is an error.
    ``sets`` (``--set``) apply to every method like the base: model options a class lacks are dropped.
    """
    config = merge(base, method)
    for key, value in [*sets, *overrides]:
        set_dotted(config, key, value)
    model = config.setdefault("model", {})
    if "class_path" not in model:
        raise ValueError("the method's yaml must set model.class_path")
    cls = method_class(model["class_path"])
    accepted = accepted_init_args(cls)
    init_args = model.get("init_args") or {}
    explicit = (method.get("model", {}).get("init_args") or {}).keys() | {k.split(".")[-1] for k, _ in overrides if k.startswith("model.")}
    unknown = sorted(k for k in explicit if k not in accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {unknown}; it accepts {sorted(accepted)}")
    model["init_args"] = {k: v for k, v in init_args.items() if k in accepted}
    trainer = config.setdefault("trainer", {})
    n = steps if steps is not None else trainer.get("max_steps")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"trainer.max_steps (the iteration budget N) must be a positive integer, got {n!r}")
    stage = 0
    for key in STAGE_KEYS:
        if key in accepted:
            stage = model["init_args"].setdefault(key, n)
    trainer["max_steps"] = n + stage
    return config


BEST_CHECKPOINT = {  # keeps the weights of the best validation of the fit (``val/dice``: the primary predictor's)
    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
    "init_args": {"monitor": "val/dice", "mode": "max", "save_top_k": 1, "filename": "best-{step}"},
}


def with_best_checkpoint(config: dict) -> dict:
    """``config`` whose test is of the weights of its best validation instead of its final ones (the run's
    ``dice``; the final weights' test is kept as ``dice_last``): what ``configs/mkd.yaml`` gives a user."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["enable_checkpointing"] = True
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), copy.deepcopy(BEST_CHECKPOINT)]
    return config


def check_shared_options(base: dict, sets: list[tuple[str, object]]) -> None:
    """Every model option of the base and of ``--set`` must be one of some method (catches typos)."""
    import mkdseg.methods as methods
    from mkdseg.methods import SegmentationMethod

    classes = [c for c in vars(methods).values() if isinstance(c, type) and issubclass(c, SegmentationMethod)]
    accepted = set().union(*(accepted_init_args(c) for c in classes))
    options = list(((base.get("model") or {}).get("init_args") or {}))
    options += [k.split(".")[-1] for k, _ in sets if k.startswith("model.init_args.")]
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"model option(s) {unknown} of the base or --set belong to none of the methods")


def config_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def for_run(config: dict, fold: int, seed: int, run_dir: Path) -> dict:
    config = copy.deepcopy(config)
    config["seed_everything"] = seed
    set_dotted(config, "data.fold", fold)
    set_dotted(config, "data.sampler_seed", seed)
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(run_dir)
    logger = trainer.get("logger")
    if isinstance(logger, dict) and "class_path" in logger:
        logger.setdefault("init_args", {}).update({"name": "logs", "version": ""})  # save_dir: default_root_dir
    return config


# -- running -------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    config_name: str
    config: dict  # composed, fold/seed-independent
    fold: int
    seed: int
    runs_dir: Path

    @property
    def key(self) -> str:
        return f"{self.config_name}-{config_hash(self.config)}"

    @property
    def dir(self) -> Path:
        return self.runs_dir / self.key / f"fold{self.fold}-seed{self.seed}"

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"


def run_one(spec: RunSpec) -> dict:
    """Fit and test one run in this process; write and return its ``result.json``."""
    from mkdseg.callbacks import MetricHistory
    from mkdseg.cli import build_cli
    from mkdseg.io import atomic_write_text

    if spec.dir.exists():  # an unfinished earlier attempt
        shutil.rmtree(spec.dir)
    spec.dir.mkdir(parents=True)
    config = for_run(spec.config, spec.fold, spec.seed, spec.dir)
    config_path = spec.dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns about command-line arguments beside `args`
    try:
        cli = build_cli(["--config", str(config_path)], run=False)
    finally:
        sys.argv = argv
    history = MetricHistory(str(spec.dir / "logs" / "val_history.json"))  # result.json keeps it as val_curve
    cli.trainer.callbacks.append(history)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - start
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # the final weights
    summary = cli.model.evaluation_summary("test")
    best = _best_checkpoint(cli.trainer)
    if best is not None:  # --test-weights best: the final weights' Dice stays in the record as dice_last
        last_dice = _means(summary["dice"])
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best.best_model_path, verbose=False)
        summary = cli.model.evaluation_summary("test")
    result = {
        "config": spec.config_name,
        "key": spec.key,
        "method": config["model"]["class_path"],
        "fold": spec.fold,
        "seed": spec.seed,
        "primary_predictor": cli.model.primary_predictor,
        "global_step": cli.trainer.global_step,
        "fit_s": round(fit_s, 1),
        "total_s": round(time.perf_counter() - start, 1),
        "test_volumes": len(cli.datamodule.test_records),
        "training_images": cli.datamodule.described_training(),  # which images the method saw
        "dice": _means(summary["dice"]),
        "torch_threads": _torch_threads(),
    }
    if best is not None:
        result.update(dice_last=last_dice, tested_weights="best validation",
                      best_val_dice=float(best.best_model_score), best_checkpoint=Path(best.best_model_path).name)
    try:  # the last validation of the fit: what choosing among runs may look at (test subjects never are)
        validation = cli.model.evaluation_summary("val")
        result.update(val_step=validation["step"], val_dice=_means(validation["dice"]),
                      val_curve=validation_curve(history.history, list(validation["dice"])))
    except LookupError:
        pass  # no validation ran within max_steps
    atomic_write_text(spec.result_path, json.dumps(result, indent=1, allow_nan=True))
    return result


def _best_checkpoint(trainer):
    """The harness's best-validation ``ModelCheckpoint`` of a fit, if it has one that saved; else ``None``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor == BEST_CHECKPOINT["init_args"]["monitor"]:
            if not callback.best_model_path:
                raise RuntimeError("--test-weights best: no validation ran within trainer.max_steps (is data.n_val 0, or "
                                   "trainer.val_check_interval past max_steps?), so there are no best weights to test")
            return callback
    return None


def validation_curve(history: dict[str, list[float]], predictors: list[str]) -> dict[str, list[float]]:
    """``{"step": [iterations], predictor: [mean validation Dice]}`` of every validation of the fit."""
    curve = {"step": history.get("step", [])}
    curve.update({p: history[f"val/dice_{p}"] for p in predictors if f"val/dice_{p}" in history})
    return curve


def tested_validation(result: dict, predictor: str) -> dict:
    """``{"val_dice", "val_step"}`` of the weights a run tested: its last validation, or with ``--test-weights
    best`` the best one (``best-step=N.ckpt``), so that choosing among runs on ``val_dice`` sees the tested weights."""
    if "best_checkpoint" not in result:
        return {"val_dice": result.get("val_dice", {}).get(predictor, {}).get("mean"), "val_step": result.get("val_step")}
    step = int(Path(result["best_checkpoint"]).stem.split("best-step=")[-1])
    curve = result["val_curve"]
    return {"val_dice": curve[predictor][curve["step"].index(step)], "val_step": step}


def curve_cell(curve: dict[str, list[float]], predictor: str) -> str:
    """A predictor's validation curve as one runs.csv cell: ``"step:dice step:dice ..."``."""
    return " ".join(f"{step}:{value:.4f}" for step, value in zip(curve.get("step", []), curve.get(predictor, [])))


def _means(dice: dict) -> dict:
    """``{predictor: {"mean": ..., structure: ...}}``: the per-volume means of an evaluation summary."""
    return {predictor: {s: entry[s]["mean"] for s in ("mean",) + tuple(k for k in entry if k != "mean")}
            for predictor, entry in dice.items()}


def _run_safely(spec: RunSpec) -> dict:
    """``run_one``, with a failure returned as ``{"error": traceback}``: one failed run must not lose the others."""
    try:
        return run_one(spec)
    except Exception:  # noqa: BLE001 - returned, not raised: the caller records it and carries on
        return {"error": traceback.format_exc()}


def _run_in_worker(spec: RunSpec, threads: int | None) -> dict:
    """``_run_safely`` in a pool process, with the parent's torch thread count."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    return _run_safely(spec)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# -- reporting -----------------------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)), len(finite)


def structures_of(results: dict[Row, list[dict]]) -> list[str]:
    """The structures the runs report, in class order (the data's, recorded in each run's result)."""
    names: dict[str, None] = {}
    for runs in results.values():
        for run in runs:
            for entry in run["dice"].values():
                names.update((k, None) for k in entry if k != "mean")
    return list(names)


def table_structures(table: list[dict]) -> list[str]:
    return [k for k in table[0]["cells"] if k != "mean"] if table else []


def aggregate(rows: list[Row], results: dict[Row, list[dict]], reference_label: str = Study.reference) -> list[dict]:
    """Per row: mean, std (over runs) and count of the run-level mean Dice and each structure's, and the
    paired difference to the row labelled ``reference_label`` (see :func:`paired_difference`)."""
    table = []
    structures = structures_of(results)
    reference = next((row for row in rows if row.label == reference_label), None)
    for row in rows:
        runs = [r for r in results.get(row, []) if row.predictor in r["dice"]]
        cells = {}
        for column in ["mean", *structures]:
            cells[column] = _stats([r["dice"][row.predictor].get(column, float("nan")) for r in runs])
        paired = None
        if reference is not None and row != reference:
            paired = paired_difference(runs, row.predictor, results.get(reference, []), reference.predictor)
        table.append({"row": row, "cells": cells, "runs": len(runs), "paired": paired})
    return table


def reference_name(study: Study) -> str:
    """What the paired column is against, as the tables say it."""
    return "baseline" if study.reference == Study.reference else study.reference.lower()


def paired_difference(runs: list[dict], predictor: str, reference_runs: list[dict], reference_predictor: str):
    """(mean difference, draws better, draws compared) of the run-level mean Dice against the reference
    run of the same fold and seed: which labelled subjects a draw gets moves every method by several
    points, so the paired difference is the comparison that draw-to-draw spread does not drown."""
    reference = {(r["fold"], r["seed"]): r["dice"][reference_predictor]["mean"] for r in reference_runs
                 if reference_predictor in r["dice"]}
    diffs = [r["dice"][predictor]["mean"] - reference[(r["fold"], r["seed"])] for r in runs
             if (r["fold"], r["seed"]) in reference]
    if not diffs:
        return None
    return sum(diffs) / len(diffs), sum(d > 0 for d in diffs), len(diffs)


def _cell(stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    return "n/a" if n == 0 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(table: list[dict], with_paper: bool, reference: str = "baseline") -> str:
    structures = table_structures(table)
    with_paired = any(entry.get("paired") for entry in table)
    header = (["Method", "Mean Dice"] + ([f"vs {reference}, paired"] if with_paired else []) + structures
              + (["Paper (MM-WHS CT)"] if with_paper else []) + ["runs"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in table:
        row = entry["row"]
        cells = [row.label, _cell(entry["cells"]["mean"])]
        if with_paired:
            paired = entry.get("paired")
            cells.append(f"{100 * paired[0]:+.2f} ({paired[1]} of {paired[2]} better)" if paired else "")
        cells += [_cell(entry["cells"][s]) for s in structures]
        if with_paper:
            cells.append("" if row.paper is None else f"{row.paper:.2f}")
        cells.append(str(entry["runs"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(table: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [e["row"].label for e in table]
    means = np.array([100 * e["cells"]["mean"][0] for e in table])
    stds = np.array([100 * e["cells"]["mean"][1] for e in table])
    structures = table_structures(table)
    per_structure = np.array([[100 * e["cells"][s][0] for s in structures] for e in table])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 0.45 * len(table) + 2), gridspec_kw={"width_ratios": [1.2, 1]})
    y = np.arange(len(table))
    ax.barh(y, np.nan_to_num(means), xerr=np.nan_to_num(stds), color="#4c72b0", capsize=3, label="this run (mean ± std)")
    paper = [(i, e["row"].paper) for i, e in enumerate(table) if e["row"].paper is not None]
    if paper:
        ax.scatter([p for _, p in paper], [i for i, _ in paper], marker="D", color="#c44e52", zorder=3, label="paper (MM-WHS CT)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    finite = means[np.isfinite(means)]
    low = min([*finite, *(p for _, p in paper)], default=0.0)
    ax.set_xlim(max(0.0, low - 10), 100)
    ax.set_xlabel("mean Dice (%)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08 - 1.2 / (len(table) + 4)), ncol=2)
    ax.grid(axis="x", alpha=0.3)
    im = ax2.imshow(per_structure, cmap="viridis", vmin=max(0.0, np.nanmin(per_structure) if np.isfinite(per_structure).any() else 0), vmax=100, aspect="auto")
    ax2.set_xticks(range(len(structures)), structures, fontsize=8, rotation=30 if len(structures) > 7 else 0)
    ax2.set_yticks(y, [""] * len(y))
    for i in range(per_structure.shape[0]):
        for j in range(per_structure.shape[1]):
            if np.isfinite(per_structure[i, j]):
                ax2.text(j, i, f"{per_structure[i, j]:.0f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax2, fraction=0.04, label="Dice (%)")
    ax2.set_title("per structure", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(study: Study, specs: dict[Row, list[RunSpec]], out: Path, meta: dict) -> list[dict]:
    results: dict[Row, list[dict]] = {}
    for row, row_specs in specs.items():
        for spec in row_specs:
            if spec.result_path.exists():
                results.setdefault(row, []).append((spec, json.loads(spec.result_path.read_text())))
    structures = structures_of({row: [r for _, r in runs] for row, runs in results.items()})
    csv_rows = []
    for row, runs in results.items():
        for spec, result in runs:
            dice = result["dice"].get(row.predictor, {})
            csv_rows.append({
                "study": study.name, "row": row.label, "config": spec.config_name, "key": spec.key, "fold": spec.fold,
                "seed": spec.seed, "predictor": row.predictor, "mean_dice": dice.get("mean"),
                **{s: dice.get(s) for s in structures},
                **tested_validation(result, row.predictor),
                "val_curve": curve_cell(result.get("val_curve", {}), row.predictor),
                "mean_dice_last": result.get("dice_last", {}).get(row.predictor, {}).get("mean"),
                "global_step": result["global_step"],
                "fit_s": result["fit_s"], "total_s": result["total_s"], "run_dir": str(spec.dir),
            })
    table = aggregate(list(specs), {row: [r for _, r in runs] for row, runs in results.items()}, study.reference)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "runs.csv").open("w", newline="") as f:
        fields = ["study", "row", "config", "key", "fold", "seed", "predictor", "mean_dice", *structures,
                  "val_dice", "val_step", "val_curve", "mean_dice_last", "global_step", "fit_s", "total_s", "run_dir"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in csv_rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    # the paper's numbers are MM-WHS cardiac CT: a column beside other data would invite a false comparison
    with_paper = any(r.paper is not None for r in specs) and set(structures) <= {name for name, _ in MMWHS}
    text = [f"# {study.title}", "", markdown_table(table, with_paper, reference_name(study)), "",
            f"Dice (%) on the held-out target fold: mean ± std over {meta['folds']} fold(s) × {meta['seeds']} seed(s) of each "
            "run's mean over test volumes (per structure likewise; std over runs, population). Paired: the mean over "
            f"draws of (this run − the {reference_name(study)} run of the same fold and seed), and in how many draws it was higher.", "",
            f"- command: `{meta['command']}`",
            f"- configs: base `{meta['base']}`, methods from `{meta['config_dir']}`; runs in `{meta['runs_dir']}`",
            f"- iteration budget N = {meta['budget']} per final stage (staged methods: N more for their first stage)",
            f"- this invocation: {meta['ran']} run(s) trained, {meta['cached']} reused, {meta['failed']} failed, "
            f"wall {meta['wall_s'] / 60:.1f} min; summed run time {meta['run_s'] / 60:.1f} min",
            f"- machine: {meta['machine']}"]
    (out / "results.md").write_text("\n".join(text) + "\n")
    bar_chart(table if with_paper else [dict(e, row=dataclasses.replace(e["row"], paper=None)) for e in table],
              f"{study.title} — mean Dice over {meta['folds']} fold(s) × {meta['seeds']} seed(s)", out / "dice.png")
    return table


def machine_description() -> str:
    import torch

    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU(s), load average "
            f"{os.getloadavg()[0]:.1f} at the end, Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread(s)), {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")


# -- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=STUDY_NAMES)
    parser.add_argument("--folds", type=int, default=2, help="folds 0..F-1 (at most data.n_folds)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..S-1")
    parser.add_argument("--out", type=Path, help="tables and chart (default benchmarks/results/STUDY)")
    parser.add_argument("--config-dir", type=Path, default=REPO / "configs" / "bench")
    parser.add_argument("--base", type=Path, help="base yaml (default CONFIG_DIR/base.yaml)")
    parser.add_argument("--runs-dir", type=Path, help="run folders, shared by studies (default benchmarks/results/runs)")
    parser.add_argument("--steps", type=int, help="iteration budget N (default: the base's trainer.max_steps)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run, e.g. --set trainer.accelerator=gpu (repeatable)")
    parser.add_argument("--methods", nargs="+", metavar="CONFIG", help="only rows of these method configs")
    parser.add_argument("--rows", nargs="+", metavar="LABEL", help="only the rows with these labels (as the tables print them)")
    parser.add_argument("--n-assistant", type=int, nargs="+", help="table3: assistant subject counts")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (1 is fastest on a busy CPU)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time, each in its own process")
    parser.add_argument("--test-weights", choices=["last", "best"], default="last",
                        help="test each run's final weights, or those of its best validation (val/dice; needs data.n_val)")
    parser.add_argument("--report-only", action="store_true", help="write the tables from finished runs, train nothing")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    config_dir = args.config_dir
    base_path = args.base or config_dir / "base.yaml"
    base = load_yaml(base_path)
    study = make_study(args.study, base, args.n_assistant)
    unknown = sorted(set(args.rows or ()) - {r.label for r in study.rows})
    if unknown:
        parser.error(f"--rows {unknown}: {args.study} has no such row; its rows are {[r.label for r in study.rows]}")
    rows = [r for r in study.rows if (not args.methods or r.config in args.methods) and (not args.rows or r.label in args.rows)]
    if not rows:
        parser.error(f"--methods {args.methods} --rows {args.rows} select no row of {args.study}")
    n_folds = (base.get("data") or {}).get("n_folds", 2)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if not 1 <= args.folds <= n_folds or args.seeds < 1:
        parser.error(f"--folds must be in 1..{n_folds} (data.n_folds) and --seeds >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sets = parse_set(args.sets)
    runs_dir = (args.runs_dir or REPO / "benchmarks" / "results" / "runs").resolve()
    out = args.out or REPO / "benchmarks" / "results" / args.study

    method_configs = {name: load_yaml(config_dir / f"{name}.yaml") for name in dict.fromkeys(r.config for r in rows)}
    check_shared_options(base, sets)
    specs: dict[Row, list[RunSpec]] = {}
    unique: dict[Path, RunSpec] = {}
    for row in rows:
        overrides = list(study.overrides.items()) + list(row.overrides)
        config = compose(base, method_configs[row.config], overrides, sets, args.steps)
        if args.test_weights == "best":
            config = with_best_checkpoint(config)
        specs[row] = []
        for fold in range(args.folds):
            for seed in range(args.seeds):
                spec = RunSpec(row.config, config, fold, seed, runs_dir)
                spec = unique.setdefault(spec.dir, spec)
                specs[row].append(spec)

    ran = cached = failed = 0
    run_seconds = 0.0
    todo = list(unique.values())
    pending: list[tuple[str, RunSpec]] = []
    for i, spec in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {spec.key} fold {spec.fold} seed {spec.seed}"
        if spec.result_path.exists():
            cached += 1
            result = json.loads(spec.result_path.read_text())
            print(f"{tag}: done before ({result['total_s']:.0f} s)", flush=True)
        elif args.report_only:
            print(f"{tag}: not run", flush=True)
        else:
            pending.append((tag, spec))

    for tag, spec, result in _train(pending, args.jobs, args.threads):
        if "error" in result:
            failed += 1
            spec.dir.mkdir(parents=True, exist_ok=True)
            (spec.dir / "error.txt").write_text(result["error"])
            print(f"{tag}: FAILED, see {spec.dir / 'error.txt'}\n{result['error']}", flush=True)
            continue
        ran += 1
        run_seconds += result["total_s"]
        primary = result["primary_predictor"]
        print(f"{tag}: {result['total_s']:.0f} s, test Dice ({primary}) {100 * result['dice'][primary]['mean']:.2f}", flush=True)

    budget = args.steps or (base.get("trainer") or {}).get("max_steps")
    meta = {
        "command": "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv),
        "base": _relative(base_path), "config_dir": _relative(config_dir), "runs_dir": _relative(runs_dir),
        "folds": args.folds, "seeds": args.seeds, "budget": budget, "ran": ran, "cached": cached, "failed": failed,
        "wall_s": time.perf_counter() - start, "run_s": run_seconds, "machine": machine_description(),
    }
    table = write_outputs(study, specs, out, meta)
    print(f"\n{study.title}\n{markdown_table(table, any(r.paper is not None for r in specs), reference_name(study))}\n\nwrote {out / 'results.md'}, {out / 'runs.csv'}, {out / 'dice.png'}")
    return 1 if failed else 0


def _train(pending: list[tuple[str, RunSpec]], jobs: int, threads: int | None):
    """Yield ``(tag, spec, result)`` per run as it finishes; ``result`` is ``{"error": traceback}`` for a
    failed run, so that one failure never stops the others."""
    if jobs == 1:
        for tag, spec in pending:
            print(f"{tag}: training {spec.config['trainer']['max_steps']} iterations ...", flush=True)
            yield tag, spec, _run_safely(spec)
        return
    # spawn, not fork: a forked child inherits torch's thread pools and any lock held at fork time
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {}
        for tag, spec in pending:
            print(f"{tag}: queued, {spec.config['trainer']['max_steps']} iterations", flush=True)
            futures[pool.submit(_run_in_worker, spec, threads)] = (tag, spec)
        for future in as_completed(futures):
            tag, spec = futures[future]
            try:
                result = future.result()
            except Exception:  # noqa: BLE001 - e.g. a worker killed by the OOM killer
                result = {"error": traceback.format_exc()}
            yield tag, spec, result


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
