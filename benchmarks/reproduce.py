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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mkdseg.compare.runs import BEST_CHECKPOINT, RunFolder, curve_cell, machine_description, run_one, tested_validation, train
from mkdseg.compare.tables import aggregate, bar_chart, markdown_table, paired_difference, structures_of
from mkdseg.labels import MMWHS

__all__ = ["aggregate", "paired_difference", "run_one"]  # the shared run and table code, as the tests know it

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
class RunSpec(RunFolder):
    config_name: str
    config: dict  # composed, fold/seed-independent
    fold: int
    seed: int
    runs_dir: Path

    @property
    def key(self) -> str:
        return f"{self.config_name}-{config_hash(self.config)}"

    @property
    def name(self) -> str:
        return self.config_name

    @property
    def max_steps(self) -> int:
        return self.config["trainer"]["max_steps"]

    def cli_args(self) -> list[str]:
        """The run's composed config for its fold and seed, written to its folder as the one ``--config``."""
        config_path = self.dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(for_run(self.config, self.fold, self.seed, self.dir), sort_keys=False))
        return ["--config", str(config_path)]


# -- reporting -----------------------------------------------------------------------------------
def reference_name(study: Study) -> str:
    """What the paired column is against, as the tables say it."""
    return "baseline" if study.reference == Study.reference else study.reference.lower()


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

    for tag, spec, result in train(pending, args.jobs, args.threads):
        if "error" in result:
            failed += 1
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


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
