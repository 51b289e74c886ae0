"""``mkdseg compare``: which method for my data, measured on it.

    mkdseg compare --target CT_DATASET --assistant MR_DATASET --n-target 2 --out compare_ct
    mkdseg compare --cache CACHE --methods joint recipe --folds 2 --seeds 2 --jobs 2 --out compare_ct
    mkdseg compare --study table1 --target MMWHS_CT --assistant MMWHS_MR --size gpu --out table1

``--study`` tables the rows of a study yaml (a shipped one: the paper's Tables 1-4, ``beyond``, ...; see
:mod:`mkdseg.compare.studies`) instead of one row per ``--methods`` entry.

Trains every method on every draw (fold x seed) of each label count, testing the weights of each run's best
validation on the held-out fold, and writes per label count ``n<N>/results.md`` (per structure and mean,
mean ± std over draws, paired difference and wins against ``--reference``, minutes per run), ``runs.csv`` and
``dice.png``; then recommends the method with the best **validation** Dice (test subjects never choose) and
prints the command that trains it (``--final`` trains it). Finished runs are reused: run it again to resume.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mkdseg.compare.budget import VALIDATIONS_PER_RUN, CostTable, iterations_for
from mkdseg.compare.recommend import recommend
from mkdseg.compare.runs import RunIndex, RunSpec, curve_cell, machine_description, tested_validation, train
from mkdseg.compare.studies import Study, StudyRow, load_study, method_rows, study_names
from mkdseg.compare.tables import aggregate, bar_chart, markdown_table, structures_of
from mkdseg.presets import METHODS, PRESETS, SIZES, method_names, preset_path

__all__ = ["PRESETS", "compare_main", "preset_names", "resolve_method", "resolve_size", "stage_overrides"]

DEFAULT_METHODS = ("baseline", "joint", "joint_gin", "recipe")
#: a method's first stage (FineTune's pre-training): given the iteration budget N too, unless its yaml sets it
STAGE_KEYS = ("pretrain_steps", "translation_steps")


@dataclass(frozen=True)
class Method:
    name: str
    path: Path

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.path.read_text()) or {}

    @property
    def model_class(self) -> type:
        """The method class its ``model.class_path`` names (``ValueError`` naming the yaml if it does not import)."""
        class_path = (self.config.get("model") or {}).get("class_path", "")
        module, _, cls_name = class_path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"{self.path}: model.class_path {class_path!r} cannot be imported: {e}") from e

    @property
    def needs_unlabelled_target(self) -> bool:
        return bool((self.config.get("data") or {}).get("unlabelled_target"))


@dataclass(frozen=True)
class Row:  # a table row with its predictor resolved (a study row may leave it to the method's primary one)
    label: str
    predictor: str
    paper: float | None = None


def preset_names() -> list[str]:
    return method_names()


def resolve_method(name: str) -> Method:
    """A preset's name (``joint``, ``recipe``, ...) or a yaml file of the user's."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"--methods: no such method config {path}")
        return Method(path.stem, path.resolve())
    preset = METHODS / f"{name}.yaml"
    if not preset.is_file():
        raise ValueError(f"--methods: unknown method {name!r}; presets: {', '.join(preset_names())}, or a .yaml file")
    return Method(name, preset)


def score_note(cache: Path | None) -> str:
    """What the tables' Dice is, by the field of view of the cache the runs trained and were tested on."""
    from mkdseg.data.cache import SliceCache

    if cache is not None and SliceCache(cache).field_of_view == "structures":
        return ("Dice (%) with the organs located from the label: each held-out target scan cut around its labelled "
                "structures (the papers' protocol, a cache made with `--field-of-view structures`), not what "
                "`mkdseg segment` gives a user; mean ± std over draws (fold × seed) of the mean over scans.")
    return ("Dice (%) of each held-out target scan segmented whole, as `mkdseg segment` segments it, in the scan's own "
            "grid against its own label file; mean ± std over draws (fold × seed) of the mean over scans.")


def resolve_size(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"--size: no such config {path}")
        return path.resolve()
    preset = SIZES / f"{name}.yaml"
    if not preset.is_file():
        raise ValueError(f"--size: unknown preset {name!r}; choose cpu, gpu or a .yaml file")
    return preset


def stage_overrides(method: Method, budget: int) -> list[str]:
    """``--trainer.max_steps``: N, or N + N for a method with a first stage its yaml leaves at N."""
    accepted = inspect.signature(method.model_class.__init__).parameters
    given = ((method.config.get("model") or {}).get("init_args") or {})
    stage = 0
    out = []
    for key in STAGE_KEYS:
        if key in accepted:
            stage = int(given.get(key, budget))
            out.append(f"--model.init_args.{key}={stage}")
    return [*out, f"--trainer.max_steps={budget + stage}"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mkdseg compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data (two nnU-Net raw datasets, or a prepared cache)")
    data.add_argument("--target", type=Path, help="nnU-Net raw dataset of the target modality (the one to segment)")
    data.add_argument("--assistant", type=Path, help="nnU-Net raw dataset of the assistant modality")
    data.add_argument("--cache", type=Path, help="slice cache (default OUT/cache; made from --target/--assistant if missing)")
    for role in ("target", "assistant"):  # what `mkdseg preprocess` takes to read the datasets, passed on to it
        data.add_argument(f"--{role}-modality", help=f"modality name of the {role} dataset (default: its channel_names; "
                                                     "name two sequences of one modality apart, e.g. t1 and t2)")
        data.add_argument(f"--{role}-orientation", metavar="AXCODES",
                          help=f"the {role} arrays' true orientation (e.g. LAS) when the dataset's headers are wrong")
    p.add_argument("--out", type=Path, default=Path("compare"), help="runs, tables and the recommendation (default ./compare)")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help=f"preset names or method yamls, one row each (default: {' '.join(DEFAULT_METHODS)}); presets: "
                        f"{', '.join(preset_names())}")
    p.add_argument("--study", metavar="STUDY", help=f"the rows of a study instead: a shipped one ({', '.join(study_names())}) "
                                                    "or a study yaml (see mkdseg.compare.studies)")
    p.add_argument("--reference", help="the row every other is paired against (default: the study's, else baseline if "
                                       "compared, else the first)")
    p.add_argument("--n-target", nargs="+", default=["all"], metavar="N",
                   help="labelled target subjects per training fold, one table each (default: all of the fold's)")
    p.add_argument("--folds", type=int, default=2, help="draws: folds 0..F-1 (at most data.n_folds)")
    p.add_argument("--seeds", type=int, default=2, help="draws: seeds 0..S-1 per fold")
    p.add_argument("--size", default="cpu", help="sizes, run length and trainer: the cpu or gpu preset, or a yaml (default cpu)")
    p.add_argument("--steps", type=int, help="iteration budget N of every method's final stage (default: the size's)")
    p.add_argument("--minutes", type=float,
                   help="instead of --steps: equal cost, M CPU-minutes of training per run; each method's iteration "
                        "budget is M minutes over its CPU time per iteration, measured once (OUT/iteration_costs.json)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="LightningCLI override for every run, e.g. --set data.batch_size=4 (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at a time, each in its own process")
    p.add_argument("--threads", type=int, help="torch threads per run (1 is fastest with --jobs on a small CPU)")
    p.add_argument("--report-only", action="store_true", help="tables and recommendation from finished runs; train nothing")
    p.add_argument("--final", action="store_true", help="then train the recommended method's model (see the printed command)")
    return p


def compare_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return _compare(args, argv)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


def _label_counts(values: list[str]) -> list[int | None]:
    counts = []
    for v in values:
        if v == "all":
            counts.append(None)
        elif v.isdigit() and int(v) >= 1:
            counts.append(int(v))
        else:
            raise ValueError(f"--n-target: expected positive integers or 'all', got {v!r}")
    return counts


def _overrides(sets: list[str]) -> list[str]:
    out = []
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. trainer.max_steps=100), got {item!r}")
        out.append(f"--{key}={value}")
    return out


def validation_overrides(size_config: dict, budget: int) -> list[str]:
    """A budget shorter than the size's validation interval would leave no validated weights to test: then
    validate once, at the end (``--set trainer.val_check_interval=...`` still wins)."""
    every = (size_config.get("trainer") or {}).get("val_check_interval")
    if isinstance(every, int) and every > budget:
        print(f"--steps {budget} < the size's trainer.val_check_interval={every}: validating at step {budget}", flush=True)
        return [f"--trainer.val_check_interval={budget}"]
    return []


def timing_overrides(size_config: dict, steps: int, args) -> list[str]:
    """When a run validates: the size's interval (:func:`validation_overrides`), or under ``--minutes``, whose budgets
    differ by method, :data:`~mkdseg.compare.budget.VALIDATIONS_PER_RUN` times, the last at the final iteration."""
    if args.minutes is not None:
        return [f"--trainer.val_check_interval={steps // VALIDATIONS_PER_RUN}"]
    return validation_overrides(size_config, steps)


def prepare_cache(args, size_config: dict) -> Path:
    """The slice cache to train on: ``--cache`` if it holds one, else made there from the two datasets at the
    size preset's image size."""
    from mkdseg.data.cache import SliceCache
    from mkdseg.data.preprocess import preprocess_main

    cache = (args.cache or args.out / "cache").resolve()
    if SliceCache(cache).exists:
        return cache
    if args.target is None or args.assistant is None:
        raise FileNotFoundError(f"--cache {cache} holds no slice cache: give --target and --assistant (nnU-Net raw "
                                "datasets) to make it, or --cache a folder made by `mkdseg preprocess`")
    image_size = (size_config.get("data") or {}).get("image_size")
    argv = ["--target", str(args.target), "--assistant", str(args.assistant), "--out", str(cache), "--no-progress"]
    for option in ("target_modality", "assistant_modality", "target_orientation", "assistant_orientation"):
        if getattr(args, option):
            argv += ["--" + option.replace("_", "-"), getattr(args, option)]
    if image_size:
        argv += ["--image-size", str(image_size)]
    print(f"preprocessing into {cache}: mkdseg preprocess {' '.join(argv)}", flush=True)
    if preprocess_main(argv) != 0:
        raise ValueError(f"preprocessing {args.target} and {args.assistant} failed")
    return cache


def _compare(args, argv: list[str]) -> int:
    start = time.perf_counter()
    if args.jobs < 1 or args.folds < 1 or args.seeds < 1:
        raise ValueError("--jobs, --folds and --seeds must be >= 1")
    size = resolve_size(args.size)
    size_config = yaml.safe_load(size.read_text()) or {}
    if args.study and args.methods:
        raise ValueError("--study and --methods: a study names its methods; give one of the two")
    study = load_study(args.study) if args.study else method_rows(list(dict.fromkeys(args.methods or DEFAULT_METHODS)))
    methods = {name: resolve_method(name) for name in dict.fromkeys(row.method for row in study.rows)}
    labels = [row.label for row in study.rows]
    reference = args.reference or study.reference or ("baseline" if "baseline" in labels else labels[0])
    if reference not in labels:
        raise ValueError(f"--reference {reference!r} is none of the rows {labels}")
    counts = _label_counts(args.n_target)
    n_folds = (size_config.get("data") or {}).get("n_folds", 2)
    if args.folds > n_folds:
        raise ValueError(f"--folds {args.folds}: the size config splits the target subjects into data.n_folds={n_folds}")
    if args.minutes is not None and args.steps is not None:
        raise ValueError("--minutes and --steps: give the budget one way")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    budget = args.steps or (size_config.get("trainer") or {}).get("max_steps")
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the iteration budget must be a positive integer (--steps or trainer.max_steps), got {budget!r}")
    cache = None if args.report_only and args.cache is None and not (args.out / "cache").exists() else prepare_cache(args, size_config)
    common = [f"--data.root={cache}", *_overrides(args.sets)]
    runs_dir = (args.out / "runs").resolve()
    costs = CostTable(args.out / "iteration_costs.json") if args.minutes is not None else None
    budgets: dict[tuple, int] = {}  # (label count, study row group) -> its iteration budget

    plan: dict[int | None, dict[tuple, list[RunSpec]]] = {}  # label count -> a study row group -> its runs
    for n in counts:
        plan[n] = {}
        for group in study.groups:
            method, row_overrides = methods[group[0]], group[1]
            if n is None and method.needs_unlabelled_target:
                print(f"{method.name}: skipped at n_target=all (it learns from the unlabelled target subjects beyond "
                      "n_target; give --n-target below a fold's labelled subject count)", flush=True)
                continue
            labels = f"--data.n_target={'null' if n is None else n}"
            steps = budget
            if costs is not None:
                steps = minutes_budget(method, (*common, *row_overrides, labels), size, runs_dir, costs, args)
            timing = timing_overrides(size_config, steps, args)
            budgets[(n, group)] = steps
            # a --set (in common) still wins over the planned validation interval: it comes later
            overrides = (common[0], *timing, *common[1:], *row_overrides, *stage_overrides(method, steps), labels)
            plan[n][group] = [RunSpec(method.name, (size, method.path), overrides, fold, seed, runs_dir,
                                      steps) for fold in range(args.folds) for seed in range(args.seeds)]

    all_specs = [s for per_method in plan.values() for specs in per_method.values() for s in specs]
    index = RunIndex(args.out / "finished_runs.jsonl", all_specs)
    pending = [(f"[{i}/{len(all_specs)}] {s.key} fold {s.fold} seed {s.seed}", s)
               for i, s in enumerate(all_specs, 1) if index.get(s) is None]
    print(f"{len(all_specs)} run(s): {len(all_specs) - len(pending)} finished before, {len(pending)} to train", flush=True)
    failed = 0
    if not args.report_only:
        for tag, spec, result in train(pending, args.jobs, args.threads):
            if "error" in result:
                failed += 1
                print(f"{tag}: FAILED, see {spec.dir / 'error.txt'}\n{result['error']}", flush=True)
            else:
                index.add(spec, result)
                primary = result["primary_predictor"]
                print(f"{tag}: {result['fit_s'] / 60:.1f} min, validation-picked weights' test Dice "
                      f"{100 * result['dice'][primary]['mean']:.2f}", flush=True)

    lines = [f"# mkdseg compare: {args.out}", ""]
    final_choice = None
    for n, per_group in plan.items():
        by_group = {g: [r for r in map(index.get, specs) if r is not None] for g, specs in per_group.items()}
        rows = {row: by_group[row.group] for row in study.rows if by_group.get(row.group)}
        if not rows:
            continue
        tag = "all" if n is None else str(n)
        note = score_note(cache)
        table = write_tables(args.out / f"n{tag}", study, rows, reference, per_group, tag, note)
        predictors = {row.label: entry["row"].predictor for row, entry in zip(rows, table)}
        choice = recommend({row.label: runs for row, runs in rows.items()}, predictors)
        chosen = next(row for row in rows if row.label == choice.method)
        final_choice = (n, chosen, budgets[(n, chosen.group)])
        lines += [f"## {tag} labelled target subject(s) per training fold", "", note, "",
                  markdown_table(table, any(row.paper is not None for row in rows), reference, with_time=True,
                                 paper_column=study.paper_column), "",
                  f"Recommended: **{choice.method}** (validation Dice {100 * choice.val_dice:.2f}, mean over "
                  f"{choice.draws} draw(s) of the validation subjects of the training fold; test subjects choose nothing)", "",
                  *([separation_note(choice), ""] if choice.runner_up is not None else []),
                  "Train it: `" + final_command(size, methods[chosen.method], chosen.overrides, cache, n, args,
                                                budgets[(n, chosen.group)]) + "`", ""]
    lines += [f"Dice (%) on each held-out target fold, mean ± std over {args.folds} fold(s) × {args.seeds} seed(s); "
              f"paired: mean of (method − {reference}) on the same fold and seed, and in how many draws it was higher; "
              "min/run: training minutes per run.", "",
              f"- command: `mkdseg compare {' '.join(argv)}`",
              *([budget_line(args.minutes, budgets, methods, study)] if args.minutes is not None else []),
              f"- {len(pending) - failed if not args.report_only else 0} run(s) trained, {failed} failed, "
              f"wall {(time.perf_counter() - start) / 60:.1f} min; machine: {machine_description()}"]
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recommendation.md").write_text(report)
    print("\n" + report, flush=True)
    if args.final and final_choice is not None:
        n, row, steps = final_choice
        failed_final = train_final(size, methods[row.method], row.overrides, cache, n, args, steps)
        return failed_final or (1 if failed else 0)
    return 1 if failed else 0


def minutes_budget(method: Method, data_overrides: tuple[str, ...], size: Path, runs_dir: Path, costs: CostTable,
                   args) -> int:
    """The iteration budget ``--minutes`` buys ``method`` (with a row's and the label count's overrides): its CPU time
    per iteration, measured once on fold 0 at the runs' thread count, kept in ``costs``."""
    accepted = inspect.signature(method.model_class.__init__).parameters
    staged = [key for key in STAGE_KEYS if key in accepted]
    if staged:
        raise ValueError(f"--minutes: {method.name} trains in two stages ({staged[0]}), whose iterations cost "
                         "differently; compare it with --steps")
    probe = RunSpec(method.name, (size, method.path), data_overrides, 0, 0, runs_dir, 0)
    seconds = costs.cost(probe.key, probe.cli_args(), args.threads)
    return iterations_for(args.minutes, seconds)


def budget_line(minutes: float, budgets: dict[tuple, int], methods: dict, study: Study) -> str:
    """The iteration budget each row got from ``--minutes``, for the report."""
    labels = {row.group: row.label for row in study.rows}
    parts = [f"{labels.get(group, group[0])} {steps}" + ("" if n is None else f" (n={n})")
             for (n, group), steps in budgets.items()]
    return (f"- equal cost: {minutes:g} CPU-minutes of training per run; iterations per run: {', '.join(parts)} "
            "(each method's CPU time per iteration: iteration_costs.json)")


def separation_note(choice) -> str:
    """Whether the validation subjects of every fold prefer the recommended method to the runner-up: with few
    validation subjects, methods within a point or two are a tie that the mean over draws hides."""
    margins = ", ".join(f"{100 * m:+.2f} in fold {f}" for f, m in sorted(choice.fold_margins.items()))
    head = f"Runner-up: **{choice.runner_up}** (validation Dice {100 * choice.runner_up_val_dice:.2f})"
    if choice.separated:
        return f"{head}; the recommended method's validation margin: {margins} (every fold prefers it)."
    if not choice.fold_margins:
        return f"{head}; no paired draws to tell whether every fold's validation subjects prefer the recommended method."
    return (f"{head}. **Validation does not separate the two**: the margin is {margins}. A fold's validation "
            "subjects are the same for every seed, so the folds are the independent evidence, and they disagree: "
            "treat the two as tied (the one you already use, or the cheaper, stays), or validate on more subjects "
            "(`--set data.n_val=N`).")


def final_args(size: Path, method: Method, overrides: tuple[str, ...], cache: Path, n: int | None, args,
               budget: int) -> list[str]:
    """The recommended row's ``mkdseg fit`` arguments: fold 0's training subjects (its held-out fold stays
    for ``mkdseg test``), validation picking the weights as in the comparison, into ``OUT/final/<method>``."""
    return ["--config", config_name(size), "--config", config_name(method.path), f"--data.root={cache}",
            f"--data.n_target={'null' if n is None else n}", *stage_overrides(method, budget),
            *timing_overrides(yaml.safe_load(size.read_text()) or {}, budget, args), *_overrides(args.sets), *overrides,
            f"--trainer.default_root_dir={(args.out / 'final' / method.name).resolve()}"]


def config_name(path: Path) -> str:
    """A shipped preset by its name (``mkdseg fit --config cpu`` reads it), any other config by its path."""
    return path.stem if preset_path(path.stem) == path else str(path)


def final_command(size: Path, method: Method, overrides: tuple[str, ...], cache: Path, n: int | None, args,
                  budget: int) -> str:
    return "mkdseg fit " + " ".join(final_args(size, method, overrides, cache, n, args, budget))


def train_final(size: Path, method: Method, overrides: tuple[str, ...], cache: Path, n: int | None, args,
                budget: int) -> int:
    from mkdseg.training import fit_and_test

    command = final_command(size, method, overrides, cache, n, args, budget)
    print(f"training the final {method.name} model: {command}", flush=True)
    fitted = fit_and_test(final_args(size, method, overrides, cache, n, args, budget), test=False)
    best = fitted.best
    ckpt = best.best_model_path if best is not None else fitted.cli.trainer.checkpoint_callback.last_model_path
    print(f"the {method.name} model ({'best validation' if best is not None else 'final'} weights): {ckpt}\n"
          f"segment scans with it: mkdseg segment --ckpt {ckpt} -i SCANS -o LABELS", flush=True)
    return 0


def resolved_rows(results: dict[StudyRow, list[dict]]) -> dict[StudyRow, Row]:
    """Each study row as a table row: its predictor, or its runs' primary one; a predictor the method lacks is an error."""
    out = {}
    for row, runs in results.items():
        predictor = row.predictor or runs[0]["primary_predictor"]
        if predictor not in runs[0]["dice"]:
            raise ValueError(f"row {row.label!r}: method {row.method} has no predictor {predictor!r}; it has "
                             f"{sorted(runs[0]['dice'])}")
        out[row] = Row(row.label, predictor, row.paper)
    return out


def write_tables(out: Path, study: Study, results: dict[StudyRow, list[dict]], reference: str,
                 plan: dict[tuple, list[RunSpec]], tag: str, note: str) -> list[dict]:
    """``results.md``, ``runs.csv`` and ``dice.png`` of one label count: one table row per study row."""
    rows = resolved_rows(results)
    table = aggregate(list(rows.values()), {rows[r]: runs for r, runs in results.items()}, reference)
    out.mkdir(parents=True, exist_ok=True)
    structures = structures_of(results)
    fields = ["method", "fold", "seed", "predictor", "mean_dice", *structures, "val_dice", "val_step", "val_curve",
              "mean_dice_last", "global_step", "fit_s", "fit_cpu_s", "training_images", "run_dir"]
    dirs = {(group, s.fold, s.seed): s.dir for group, specs in plan.items() for s in specs}
    with_paper = any(row.paper is not None for row in rows.values())
    with (out / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for study_row, runs in results.items():
            method, p = rows[study_row].label, rows[study_row].predictor
            for r in runs:
                dice = r["dice"].get(p, {})
                writer.writerow({"method": method, "fold": r["fold"], "seed": r["seed"], "predictor": p,
                                 "mean_dice": dice.get("mean"), **{s: dice.get(s) for s in structures},
                                 **tested_validation(r, p), "val_curve": curve_cell(r.get("val_curve", {}), p),
                                 "mean_dice_last": r.get("dice_last", {}).get(p, {}).get("mean"),
                                 "global_step": r["global_step"], "fit_s": r["fit_s"], "fit_cpu_s": r.get("fit_cpu_s", ""),
                                 "training_images": r.get("training_images", ""),
                                 "run_dir": dirs.get((study_row.group, r["fold"], r["seed"]), "")})
    title = f"{study.title}: " if study.title else ""
    (out / "results.md").write_text(f"# {title}{tag} labelled target subject(s) per training fold\n\n{note}\n\n"
                                    + markdown_table(table, with_paper, reference, with_time=True,
                                                     paper_column=study.paper_column) + "\n")
    bar_chart(table, f"{title}{tag} labelled target subject(s): mean Dice over draws", out / "dice.png",
              paper_label=study.paper_column)
    return table
