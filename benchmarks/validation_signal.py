"""Can validation tell two methods apart? Read from finished `mkdseg compare` runs, no training.

    python -m benchmarks.validation_signal benchmarks/results/compare_recipe_ablation benchmarks/results/compare_whole_scan \
        benchmarks/results/compare_semi_supervised benchmarks/results/compare_bcp_ablation --steps 1000 \
        --out benchmarks/results/validation_signal

A study is read from its tables (``n*/runs.csv``, a row per run: what the repository keeps), or from its
``finished_runs.jsonl`` where it has none.

For every pair of run configurations with the same draws (fold x seed; at least two folds), the test scans' paired
difference is the truth; the validation subjects' paired difference (of the weights each run tested) is the signal
``mkdseg compare`` recommends on. Pairs are binned by the size of their test difference; per bin, how often

- the mean validation difference over all draws points the way the test difference does (the recommendation), and
- every fold's mean validation difference does (what ``compare`` calls "separated": a fold's validation subjects are
  the same for every seed, so folds are the independent evidence).

The pairs share runs, so they are not independent trials: read the counts as how often, not as a significance test.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import sys
from pathlib import Path

from mkdseg.compare.runs import tested_validation
from mkdseg.io import atomic_write_text

BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 5.0), (5.0, float("inf")))  # |test difference| in Dice points


def load_runs(studies: list[Path], steps: int | None) -> dict[str, dict[tuple[int, int], dict]]:
    """``{configuration key: {(fold, seed): {"test", "val"}}}`` of every finished run (of ``steps`` iterations), from
    each study's tables (``n*/runs.csv``: what the repository keeps of a study, a row per run), or from its
    ``finished_runs.jsonl`` (compare's record of every finished run) where it has no tables."""
    runs: dict[str, dict[tuple[int, int], dict]] = {}
    for study in studies:
        for key, fold, seed, global_step, test, val in _finished(study):
            if (steps is not None and global_step != steps) or val is None:
                continue
            runs.setdefault(key, {})[(fold, seed)] = {"test": 100 * test, "val": 100 * val}
    return runs


def _finished(study: Path):
    """``(key, fold, seed, global_step, test Dice, tested weights' validation Dice)`` of each run of ``study``: a
    ``mkdseg compare --out`` folder, a ``runs.csv`` or a ``finished_runs.jsonl``."""
    tables = sorted(study.glob("n*/runs.csv")) if study.is_dir() else [study] if study.suffix == ".csv" else []
    for table in tables:
        with table.open(newline="") as f:
            for row in csv.DictReader(f):
                # a run's folder is <runs>/<configuration key>/fold<f>-seed<s>: the key names the configuration
                key = Path(row["run_dir"]).parent.name if row.get("run_dir") else f"{table.parent}:{row['method']}"
                val = float(row["val_dice"]) if row.get("val_dice") not in (None, "", "None") else None
                yield key, int(row["fold"]), int(row["seed"]), int(row["global_step"]), float(row["mean_dice"]), val
    if tables:
        return
    index = study / "finished_runs.jsonl" if study.is_dir() else study
    if not index.is_file() or index.suffix != ".jsonl":
        raise FileNotFoundError(f"{study}: no n*/runs.csv and no finished_runs.jsonl (a `mkdseg compare --out` folder)")
    for line in index.read_text().splitlines():
        result = json.loads(line)
        predictor = result["primary_predictor"]
        yield (result["key"], result["fold"], result["seed"], result["global_step"], result["dice"][predictor]["mean"],
               tested_validation(result, predictor)["val_dice"])


def pair_signals(runs: dict[str, dict[tuple[int, int], dict]]) -> list[dict]:
    """Per pair of configurations with the same draws: the test difference, the mean validation difference and each
    fold's."""
    pairs = []
    for a, b in itertools.combinations(sorted(runs), 2):
        draws = sorted(set(runs[a]) & set(runs[b]))
        folds = sorted({f for f, _ in draws})
        if len(folds) < 2:
            continue
        diff = {d: {k: runs[a][d][k] - runs[b][d][k] for k in ("test", "val")} for d in draws}
        pairs.append({"a": a, "b": b, "draws": len(draws),
                      "test": statistics.mean(v["test"] for v in diff.values()),
                      "val": statistics.mean(v["val"] for v in diff.values()),
                      "val_by_fold": [statistics.mean(v["val"] for d, v in diff.items() if d[0] == f) for f in folds]})
    return pairs


def tabulate(pairs: list[dict]) -> list[dict]:
    rows = []
    for lo, hi in BINS:
        inside = [p for p in pairs if lo <= abs(p["test"]) < hi]
        mean_right = sum((p["val"] > 0) == (p["test"] > 0) for p in inside)
        folds_right = sum(all((v > 0) == (p["test"] > 0) for v in p["val_by_fold"]) for p in inside)
        folds_wrong = sum(all((v > 0) != (p["test"] > 0) for v in p["val_by_fold"]) for p in inside)
        rows.append({"test_gap": f"{lo:g} to {hi:g}", "pairs": len(inside), "mean_right": mean_right,
                     "every_fold_right": folds_right, "every_fold_wrong": folds_wrong})
    return rows


def report(rows: list[dict], command: str, n_configs: int, n_pairs: int) -> str:
    lines = [f"`{command}`", "",
             f"{n_configs} run configurations, {n_pairs} pairs with the same draws over at least two folds.", "",
             "| test difference (Dice points) | pairs | mean validation points the right way | every fold's "
             "validation right (\"separated\") | every fold's validation wrong |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['test_gap']} | {r['pairs']} | {r['mean_right']} | {r['every_fold_right']} | "
                     f"{r['every_fold_wrong']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path,
                        help="`mkdseg compare --out` folders (or their finished_runs.jsonl, or runs.csv files)")
    parser.add_argument("--steps", type=int, help="only runs of this many iterations")
    parser.add_argument("--out", type=Path, help="write results.md and results.json here")
    args = parser.parse_args(argv)
    runs = load_runs(args.studies, args.steps)
    pairs = pair_signals(runs)
    rows = tabulate(pairs)
    command = "python -m benchmarks.validation_signal " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(rows, command.strip(), len(runs), len(pairs))
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.md", text)
        # one pair per line, rounded: the table is results.md; this is what it was counted from
        rounded = [{k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v] if isinstance(v, list) else v)
                    for k, v in p.items()} for p in pairs]
        atomic_write_text(args.out / "results.json", "{\"rows\": " + json.dumps(rows) + ",\n\"pairs\": [\n"
                          + ",\n".join(json.dumps(p, separators=(",", ":")) for p in rounded) + "\n]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
