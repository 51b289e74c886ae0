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
import sys
import time
from pathlib import Path

from mkdseg.compare.configs import resolve_method, resolve_size, stage_overrides
from mkdseg.compare.launch import Launcher, LocalLauncher
from mkdseg.compare.plan import DEFAULT_METHODS, RunPlan, plan_comparison
from mkdseg.compare.report import write_report
from mkdseg.compare.studies import study_names
from mkdseg.presets import PRESETS, method_names

# resolve_method, resolve_size, stage_overrides and PRESETS: benchmarks/translation_quality.py and
# tests/test_translation_quality.py import them from here
__all__ = ["PRESETS", "build_parser", "compare_main", "resolve_method", "resolve_size", "stage_overrides"]


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
                        f"{', '.join(method_names())}")
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


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    start = time.perf_counter()
    if args.jobs < 1 or args.folds < 1 or args.seeds < 1:
        raise ValueError("--jobs, --folds and --seeds must be >= 1")
    launcher = LocalLauncher(args.jobs, args.threads)
    plan = plan_comparison(args, may_measure=launcher.trains_here)
    pending = plan.pending
    print(f"{len(plan.specs)} run(s): {len(plan.specs) - len(pending)} finished before, {len(pending)} to train", flush=True)
    failed = 0 if args.report_only else train_pending(plan, launcher)
    recommendation = write_report(plan, f"mkdseg compare {' '.join(argv)}", args.minutes,
                                  0 if args.report_only else len(pending) - failed, failed, start)
    print("\n" + recommendation.text, flush=True)
    if args.final and recommendation.final is not None:
        return launcher.train_final(recommendation.final) or (1 if failed else 0)
    return 1 if failed else 0


def train_pending(plan: RunPlan, launcher: Launcher) -> int:
    """Train the plan's pending runs, each finished one indexed as it comes; the number that failed."""
    failed = 0
    for tag, spec, result in launcher.train(plan.pending):
        if "error" in result:
            failed += 1
            print(f"{tag}: FAILED, see {result['see']}\n{result['error']}", flush=True)
        else:
            plan.index.add(spec, result)
            primary = result["primary_predictor"]
            print(f"{tag}: {result['fit_s'] / 60:.1f} min, validation-picked weights' test Dice "
                  f"{100 * result['dice'][primary]['mean']:.2f}", flush=True)
    return failed
