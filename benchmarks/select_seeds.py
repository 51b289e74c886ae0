"""Best of K training seeds on validation Dice: ``python -m benchmarks.select_seeds --group K --out OUT.csv RUNS.csv ...``.

A GAN method can split by seed on the same labelled subjects (Table 4 on the abdomen: MKD's ensemble +11.3
over the baseline with seed 0, -8.5 with seed 1, and the validation subjects showed which from 250
iterations). A user who trains K seeds and keeps the one that scores best on the validation subjects (never
the test subjects) pays K runs for it. This turns studies' ``runs.csv`` files with seeds 0..S-1 into the
``runs.csv`` of that recipe:

- seeds k*K .. k*K+K-1 of one row and fold make draw k (its ``seed`` column; ``chosen_seed`` says which won);
- the run with the highest ``val_dice`` (the last validation of its fit, of the row's own predictor) is kept,
  the lowest seed on a tie; its test Dice is the draw's; ``fit_s`` and ``total_s`` are the K runs' sums,
  what the recipe costs;
- the row's label gets `` (best of K on validation)``, so that the output and its input can be read together.

``--at-step S`` chooses on the validation after S iterations instead (from ``val_curve``): the others stop
there, so the recipe costs one full run plus S/N of each other run (``fit_s`` counts them so, pro rata).

``python -m benchmarks.compare`` reads the output like any other runs.csv: pair it with the baseline's
selected rows for a compute-matched comparison, or with single runs for what the selection buys.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from mkdseg.io import atomic_write_text

REQUIRED = {"row", "fold", "seed", "mean_dice", "val_dice", "global_step", "fit_s", "total_s"}
OPTIONAL = {"val_curve", "mean_dice_last"}  # columns a later benchmarks.reproduce added: files with and without mix


def read_runs(paths: list[Path]) -> tuple[list[str], list[dict]]:
    """(the columns, every record) of the runs.csv files; the files must share their columns."""
    fields: list[str] | None = None
    records: list[dict] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such runs.csv (a study's --out folder holds one)")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = REQUIRED - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (written before benchmarks.reproduce "
                                 "recorded validation: the study's command, run again, rewrites it)")
            if fields is not None and set(reader.fieldnames) - OPTIONAL != set(fields) - OPTIONAL:
                raise ValueError(f"{path}: its columns differ from {paths[0]}'s (studies of different structures?)")
            fields = [*(fields or []), *(c for c in reader.fieldnames if c not in (fields or []))]
            records += [dict(r, source=str(path)) for r in reader]
    return fields or [], records


def validation_at(record: dict, step: int | None) -> float:
    """The record's validation Dice: the last one, or the one after ``step`` iterations."""
    where = f"{record['source']}: row {record['row']!r} fold {record['fold']} seed {record['seed']}"
    if step is None:
        if not record["val_dice"]:
            raise ValueError(f"{where} has no val_dice (no validation subjects, data.n_val: 0, or a run older "
                             f"than the column: {record.get('run_dir')})")
        return float(record["val_dice"])
    curve = dict(item.split(":") for item in (record.get("val_curve") or "").split())
    if str(step) not in curve:
        raise ValueError(f"{where} has no validation after {step} iterations (its val_curve has "
                         f"{', '.join(curve) or 'none'})")
    return float(curve[str(step)])


def select(records: list[dict], group: int, step: int | None = None) -> tuple[list[dict], list[str]]:
    """(one record per full group of ``group`` seeds, the groups left out for having fewer seeds); with
    ``step``, chosen on the validation after ``step`` iterations, the others' cost counted up to there."""
    by_group: dict[tuple[str, int, int], list[dict]] = {}
    for record in records:
        seed = int(record["seed"])
        by_group.setdefault((record["row"], int(record["fold"]), seed // group), []).append(record)
    chosen, incomplete = [], []
    for (row, fold, draw), members in by_group.items():
        members.sort(key=lambda r: int(r["seed"]))
        seeds = [int(r["seed"]) for r in members]
        duplicates = {s for s in seeds if seeds.count(s) > 1}
        if duplicates:
            raise ValueError(f"row {row!r} fold {fold} seed {min(duplicates)} is in more than one file "
                             f"({', '.join(sorted({r['source'] for r in members}))}); pass one of them")
        if len(members) < group:
            incomplete.append(f"{row!r} fold {fold} draw {draw}: seeds {seeds} of {group}")
            continue
        scores = [validation_at(r, step) for r in members]
        best = max(range(len(members)), key=lambda i: (scores[i], -i))

        def cost(column: str) -> str:
            share = [1.0 if i == best or step is None else step / float(r["global_step"]) for i, r in enumerate(members)]
            return f"{sum(f * float(r[column]) for f, r in zip(share, members)):.1f}"

        where = "" if step is None else f" at {step}"
        chosen.append(dict(
            members[best], row=f"{row} (best of {group} on validation{where})", seed=draw,
            chosen_seed=members[best]["seed"], fit_s=cost("fit_s"), total_s=cost("total_s"),
            candidates=" ".join(f"{r['seed']}:{100 * v:.1f}" for r, v in zip(members, scores)),
        ))
    return chosen, incomplete


def write_runs(path: Path, fields: list[str], chosen: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "chosen_seed", "candidates"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


def markdown(chosen: list[dict]) -> str:
    lines = ["| row | fold | draw | validation Dice by seed | chosen | test Dice |", "|---|---|---|---|---|---|"]
    for r in chosen:
        test = f"{100 * float(r['mean_dice']):.2f}" if r["mean_dice"] else "n/a"
        lines.append(f"| {r['row']} | {r['fold']} | {r['seed']} | {r['candidates']} | {r['chosen_seed']} | {test} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="runs.csv files of benchmarks.reproduce studies")
    parser.add_argument("--group", type=int, default=2, help="K: seeds per draw, of which the best on validation is kept")
    parser.add_argument("--at-step", type=int, help="choose on the validation after this many iterations "
                        "(default: the last); the other seeds' runs are counted up to there")
    parser.add_argument("--out", type=Path, required=True, help="the selected runs.csv to write")
    args = parser.parse_args(argv)
    if args.group < 2:
        parser.error(f"--group must be at least 2, got {args.group}")
    if args.at_step is not None and args.at_step < 1:
        parser.error(f"--at-step must be a positive iteration count, got {args.at_step}")
    if args.out.resolve() in {p.resolve() for p in args.runs}:
        parser.error(f"--out {args.out} is one of the inputs; write the selection beside them")
    try:
        fields, records = read_runs(args.runs)
        chosen, incomplete = select(records, args.group, args.at_step)
    except (FileNotFoundError, ValueError) as error:
        print(f"benchmarks.select_seeds: {error}", file=sys.stderr)
        return 2
    for line in incomplete:
        print(f"benchmarks.select_seeds: left out {line}", file=sys.stderr)
    if not chosen:
        print(f"benchmarks.select_seeds: no row has a full group of {args.group} seeds; nothing written", file=sys.stderr)
        return 2
    write_runs(args.out, fields, chosen)
    sys.stdout.write(markdown(chosen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
