"""``mkdseg compare``: which method for my data, measured on it.

    mkdseg compare --target CT_DATASET --assistant MR_DATASET --n-target 2 --out compare_ct
    mkdseg compare --cache CACHE --methods joint recipe --folds 2 --seeds 2 --jobs 2 --out compare_ct
    mkdseg compare --study table1 --target MMWHS_CT --assistant MMWHS_MR --size gpu --out table1
    mkdseg compare --study table1 --cache CACHE --size gpu --launcher slurm --slurm-partition gpu --out table1

``--study`` tables the rows of a study yaml (a shipped one: the paper's Tables 1-4, ``beyond``, ...; see
:mod:`mkdseg.compare.studies`) instead of one row per ``--methods`` entry.

Trains every method on every draw (fold x seed) of each label count, testing the weights of each run's best
validation on the held-out fold, and writes per label count ``n<N>/results.md`` (per structure and mean,
mean ± std over draws, paired difference and wins against ``--reference``, minutes per run), ``runs.csv`` and
``dice.png``; then recommends the method with the best **validation** Dice (test subjects never choose) and
prints the command that trains it (``--final`` trains it). Finished runs are reused: run it again to resume.
``--launcher slurm`` trains each run (and the final model) as a SLURM job instead (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mkdseg.compare.launch import Launcher, make_launcher
from mkdseg.compare.plan import DEFAULT_METHODS, RunPlan, plan_comparison
from mkdseg.compare.report import write_report
from mkdseg.compare.slurm import missing_commands
from mkdseg.compare.studies import study_names
from mkdseg.presets import method_names

__all__ = ["build_parser", "compare_main"]

#: the options of --launcher slurm (their argparse dests), refused with --launcher local
SLURM_OPTIONS = ("slurm_gpus", "slurm_cpus", "slurm_partition", "slurm_time", "slurm_setup", "slurm_args", "slurm_poll")


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
    p.add_argument("--jobs", type=int, help="runs trained at a time, each in its own process (default 1); with "
                                            "--launcher slurm: jobs queued at a time (default: every run at once)")
    p.add_argument("--threads", type=int, help="torch threads per run (1 is fastest with --jobs on a small CPU)")
    p.add_argument("--report-only", action="store_true", help="tables and recommendation from finished runs; train nothing")
    p.add_argument("--final", action="store_true", help="then train the recommended method's model (see the printed command)")
    slurm = p.add_argument_group("SLURM (--launcher slurm: each run a job; details in docs/scaling.md)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: train on this machine (default); slurm: submit each run, and the final model, as a SLURM "
                        "job (sbatch), wait for them and collect their results; job scripts and logs in OUT/slurm")
    slurm.add_argument("--slurm-gpus", type=int, metavar="N",
                       help="GPUs per job (--gres=gpu:N; default: the size's trainer.devices on a GPU, else 0)")
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (--cpus-per-task; default: --threads, "
                                                                   "else 1); also the torch threads without --threads")
    slurm.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's)")
    slurm.add_argument("--slurm-time", type=int, metavar="MINUTES", help="time limit per job (default: the partition's)")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line each job runs before Python, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--slurm-arg", dest="slurm_args", action="append", default=[], metavar="OPTION",
                       help="another sbatch option, as one word: --slurm-arg=--account=myproject (repeatable)")
    slurm.add_argument("--slurm-poll", type=float, metavar="SECONDS", help="how often squeue is asked (default 10)")
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
    if (args.jobs is not None and args.jobs < 1) or args.folds < 1 or args.seeds < 1:
        raise ValueError("--jobs, --folds and --seeds must be >= 1")
    check_launcher_options(args)
    plan = plan_comparison(args, may_measure=args.launcher == "local")
    launcher = make_launcher(args, plan.size)
    pending = plan.pending
    print(f"{len(plan.specs)} run(s): {len(plan.specs) - len(pending)} finished before, {len(pending)} to train", flush=True)
    if args.report_only:
        launcher.note_pending(pending)
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


def check_launcher_options(args: argparse.Namespace) -> None:
    """The ``--slurm-*`` options only with ``--launcher slurm``, in range, and SLURM's commands there to take them."""
    given = [dest for dest in SLURM_OPTIONS if getattr(args, dest) not in (None, [])]
    if args.launcher == "local":
        if given:
            raise ValueError(f"{option(given[0])} is for --launcher slurm (the runs train here with --launcher local)")
        return
    for dest, least in (("slurm_gpus", 0), ("slurm_cpus", 1), ("slurm_time", 1)):
        if getattr(args, dest) is not None and getattr(args, dest) < least:
            raise ValueError(f"{option(dest)} must be >= {least}, got {getattr(args, dest)}")
    if args.slurm_poll is not None and args.slurm_poll <= 0:
        raise ValueError(f"--slurm-poll must be > 0 seconds, got {args.slurm_poll}")
    missing = missing_commands()
    if missing:
        raise ValueError(f"--launcher slurm: {' and '.join(missing)} not found on PATH; run compare where SLURM jobs "
                         "are submitted (a cluster's login node)")


def option(dest: str) -> str:
    """The command-line option of an argparse dest."""
    return "--slurm-arg" if dest == "slurm_args" else "--" + dest.replace("_", "-")
