"""What a comparison trains: every run (study row group x label count x fold x seed) with its configs and overrides,
the iteration budget of each group, and which runs are finished (reused: never trained again)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from mkdseg.compare.budget import VALIDATIONS_PER_RUN, CostTable, iterations_for
from mkdseg.compare.cache import prepare_cache
from mkdseg.compare.configs import Method, resolve_method, resolve_size, stage_overrides
from mkdseg.compare.final import FinalRun
from mkdseg.compare.runs import RunIndex, RunSpec
from mkdseg.compare.studies import Study, StudyRow, load_study, method_rows
from mkdseg.presets import config_argument

DEFAULT_METHODS = ("baseline", "joint", "joint_gin", "recipe")

Group = tuple[str, tuple[str, ...]]  # a study row group: (method, overrides); its rows share its runs
LabelCount = int | None  # labelled target subjects per training fold; None: all of the fold's


@dataclass(frozen=True)
class RunPlan:
    """The runs of one comparison and what they share. ``runs[n][group]``: the runs (fold x seed) of a study row group
    at label count ``n``; ``budgets`` and ``timing`` (when it validates): per (n, group); ``pending``: the runs not
    finished when the plan was made (``index`` holds the finished ones, and each run as it finishes)."""

    study: Study
    methods: dict[str, Method]
    reference: str
    size: Path
    cache: Path | None
    out: Path
    folds: int
    seeds: int
    sets: tuple[str, ...]  # --set, as --key=value overrides of every run
    runs: dict[LabelCount, dict[Group, list[RunSpec]]]
    budgets: dict[tuple[LabelCount, Group], int]
    timing: dict[tuple[LabelCount, Group], tuple[str, ...]]
    index: RunIndex
    pending: tuple[tuple[str, RunSpec], ...]  # (tag for the log, run)

    @property
    def specs(self) -> list[RunSpec]:
        return [s for per_group in self.runs.values() for specs in per_group.values() for s in specs]

    def finished(self, n: LabelCount) -> dict[Group, list[dict]]:
        """The results of label count ``n``'s finished runs, by group."""
        return {g: [r for r in map(self.index.get, specs) if r is not None] for g, specs in self.runs[n].items()}

    def final_run(self, n: LabelCount, row: StudyRow) -> FinalRun:
        """``row``'s ``mkdseg fit`` arguments: fold 0's training subjects (its held-out fold stays for ``mkdseg test``),
        validation picking the weights as in the comparison, into ``OUT/final/<method>``."""
        method, budget = self.methods[row.method], self.budgets[(n, row.group)]
        return FinalRun(method.name, (
            "--config", config_argument(self.size), "--config", config_argument(method.path), f"--data.root={self.cache}",
            f"--data.n_target={'null' if n is None else n}", *stage_overrides(method, budget),
            *self.timing[(n, row.group)], *self.sets, *row.overrides,
            f"--trainer.default_root_dir={(self.out / 'final' / method.name).resolve()}"))


def plan_comparison(args: argparse.Namespace, may_measure: bool = True) -> RunPlan:
    """The plan of ``mkdseg compare``'s options. ``may_measure``: whether ``--minutes`` may measure a method's cost per
    iteration in this process (not where runs train elsewhere, on a cluster's nodes)."""
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
    counts = label_counts(args.n_target)
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
    cache = None
    if not (args.report_only and args.cache is None and not (args.out / "cache").exists()):
        cache = prepare_cache(args, (size_config.get("data") or {}).get("image_size"))
    sets = tuple(set_overrides(args.sets))
    common = (f"--data.root={cache}", *sets)
    runs_dir = (args.out / "runs").resolve()
    costs = CostTable(args.out / "iteration_costs.json") if args.minutes is not None else None

    runs: dict[LabelCount, dict[Group, list[RunSpec]]] = {}
    budgets, timing = {}, {}
    for n in counts:
        runs[n] = {}
        for group in study.groups:
            method, row_overrides = methods[group[0]], group[1]
            if n is None and method.needs_unlabelled_target:
                print(f"{method.name}: skipped at n_target=all (it learns from the unlabelled target subjects beyond "
                      "n_target; give --n-target below a fold's labelled subject count)", flush=True)
                continue
            count = f"--data.n_target={'null' if n is None else n}"
            steps = budget
            if costs is not None:
                probe = RunSpec(method.name, (size, method.path), (*common, *row_overrides, count), 0, 0, runs_dir, 0)
                steps = minutes_budget(method, probe, costs, args.minutes, args.threads, may_measure)
            budgets[(n, group)] = steps
            timing[(n, group)] = tuple(timing_overrides(size_config, steps, args.minutes))
            # a --set (in common) still wins over the planned validation interval: it comes later
            overrides = (common[0], *timing[(n, group)], *common[1:], *row_overrides, *stage_overrides(method, steps), count)
            runs[n][group] = [RunSpec(method.name, (size, method.path), overrides, fold, seed, runs_dir, steps)
                              for fold in range(args.folds) for seed in range(args.seeds)]

    specs = [s for per_group in runs.values() for group_specs in per_group.values() for s in group_specs]
    index = RunIndex(args.out / "finished_runs.jsonl", specs)
    pending = tuple((f"[{i}/{len(specs)}] {s.key} fold {s.fold} seed {s.seed}", s)
                    for i, s in enumerate(specs, 1) if index.get(s) is None)
    return RunPlan(study, methods, reference, size, cache, args.out, args.folds, args.seeds, sets, runs, budgets, timing,
                   index, pending)


def label_counts(values: list[str]) -> list[LabelCount]:
    counts = []
    for v in values:
        if v == "all":
            counts.append(None)
        elif v.isdigit() and int(v) >= 1:
            counts.append(int(v))
        else:
            raise ValueError(f"--n-target: expected positive integers or 'all', got {v!r}")
    return counts


def set_overrides(sets: list[str]) -> list[str]:
    """``--set KEY=VALUE`` as LightningCLI's ``--KEY=VALUE``."""
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


def timing_overrides(size_config: dict, steps: int, minutes: float | None) -> list[str]:
    """When a run validates: the size's interval (:func:`validation_overrides`), or under ``--minutes``, whose budgets
    differ by method, :data:`~mkdseg.compare.budget.VALIDATIONS_PER_RUN` times, the last at the final iteration."""
    if minutes is not None:
        return [f"--trainer.val_check_interval={steps // VALIDATIONS_PER_RUN}"]
    return validation_overrides(size_config, steps)


def minutes_budget(method: Method, probe: RunSpec, costs: CostTable, minutes: float, threads: int | None,
                   may_measure: bool) -> int:
    """The iteration budget ``minutes`` buys ``method`` (``probe``: its configs and overrides on fold 0): its CPU
    time per iteration, measured once at the runs' thread count, kept in ``costs``."""
    if method.stage_keys:
        raise ValueError(f"--minutes: {method.name} trains in two stages ({method.stage_keys[0]}), whose iterations "
                         "cost differently; compare it with --steps")
    if not may_measure and not costs.has(probe.key):
        raise ValueError(f"--minutes: no measured cost per iteration of {probe.key} in {costs.path}, and the runs train "
                         "on other machines than this one; measure it on one of theirs first: the same command with "
                         "--launcher local --report-only (under srun), which measures and trains nothing")
    return iterations_for(minutes, costs.cost(probe.key, probe.cli_args(), threads))
