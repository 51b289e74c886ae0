"""Paired comparison of rows across studies: ``python -m benchmarks.compare --reference ROW RUNS.csv ...``.

Each study of :mod:`benchmarks.reproduce` pairs its rows with its own baseline only; rows of different studies
(Table 1's joint training against Table 2's MKD without image alignment, say) sit in different ``runs.csv``
files. This reads any number of them and prints, for every row, its mean ± std over draws, its paired
difference to ``--reference`` on the same fold and seed (mean, draws better, and each draw's value) and its
mean training seconds per run. Draws are listed in (fold, seed) order.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

Draw = tuple[int, int]


FINAL_WEIGHTS = " (final weights)"


def load_rows(paths: list[Path], final_weights: bool = False) -> dict[str, dict[Draw, dict]]:
    """``{row label: {(fold, seed): {"dice": percent, "fit_s": seconds}}}`` from the studies' runs.csv files;
    ``final_weights``: also, for runs that tested their best-validation weights (``--test-weights best``), a row
    ``"<label> (final weights)"`` of the same runs' final weights (``mean_dice_last``)."""
    rows: dict[str, dict[Draw, dict]] = {}
    origin: dict[tuple[str, Draw], Path] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such runs.csv (a study's --out folder holds one)")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"row", "fold", "seed", "mean_dice", "fit_s"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: not a benchmarks.reproduce runs.csv (no column {', '.join(sorted(missing))})")
            for record in reader:
                if not record["mean_dice"]:
                    continue  # a run whose predictor has no Dice (failed): nothing to compare
                draw = (int(record["fold"]), int(record["seed"]))
                label = record["row"]
                if (label, draw) in origin:
                    raise ValueError(f"row {label!r} fold {draw[0]} seed {draw[1]} is in both {origin[label, draw]} "
                                     f"and {path}; pass one of them")
                origin[label, draw] = path
                rows.setdefault(label, {})[draw] = {"dice": 100 * float(record["mean_dice"]),
                                                    "fit_s": float(record["fit_s"])}
                if final_weights and record.get("mean_dice_last"):
                    rows.setdefault(label + FINAL_WEIGHTS, {})[draw] = {"dice": 100 * float(record["mean_dice_last"]),
                                                                        "fit_s": float(record["fit_s"])}
    return rows


def compare(rows: dict[str, dict[Draw, dict]], reference: str) -> list[dict]:
    """Per row: mean and std of its Dice, the paired differences to ``reference`` and mean fit seconds."""
    if reference not in rows:
        raise ValueError(f"--reference {reference!r} is none of the rows: {', '.join(map(repr, rows))}")
    ref = rows[reference]
    table = []
    for label, draws in rows.items():
        dice = [d["dice"] for d in draws.values()]
        shared = sorted(set(draws) & set(ref))
        diffs = [draws[k]["dice"] - ref[k]["dice"] for k in shared]
        table.append({
            "row": label, "mean": statistics.mean(dice), "std": statistics.pstdev(dice), "draws": len(dice),
            "paired": statistics.mean(diffs) if diffs else None, "better": sum(d > 0 for d in diffs),
            "per_draw": dict(zip(shared, diffs)), "fit_s": statistics.mean(d["fit_s"] for d in draws.values()),
        })
    return table


def markdown(table: list[dict], reference: str) -> str:
    lines = [f"| row | mean ± std | paired vs {reference} | better | per draw (fold, seed) | draws | s / run |",
             "|---|---|---|---|---|---|---|"]
    for e in table:
        is_ref = e["row"] == reference
        paired = "" if is_ref or e["paired"] is None else f"{e['paired']:+.2f}"
        better = "" if is_ref or e["paired"] is None else f"{e['better']}/{len(e['per_draw'])}"
        per_draw = "" if is_ref else ", ".join(f"({f},{s}) {d:+.2f}" for (f, s), d in e["per_draw"].items())
        lines.append(f"| {e['row']} | {e['mean']:.2f} ± {e['std']:.2f} | {paired} | {better} | {per_draw} | "
                     f"{e['draws']} | {e['fit_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="runs.csv files of benchmarks.reproduce studies")
    parser.add_argument("--reference", default="Baseline (target only)", help="the row every other is paired with")
    parser.add_argument("--final-weights", action="store_true",
                        help=f"also a row '<row>{FINAL_WEIGHTS}' for runs that tested their best validation's weights")
    args = parser.parse_args(argv)
    try:
        table = compare(load_rows(args.runs, args.final_weights), args.reference)
    except (FileNotFoundError, ValueError) as error:
        print(f"benchmarks.compare: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown(table, args.reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
