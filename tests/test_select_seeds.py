"""benchmarks.select_seeds: best of K seeds on validation Dice, as a runs.csv benchmarks.compare reads."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level package of the repository, not of mkdseg
from benchmarks.compare import compare, load_rows  # noqa: E402
from benchmarks.select_seeds import main  # noqa: E402

FIELDS = ["study", "row", "config", "key", "fold", "seed", "predictor", "mean_dice", "liver", "val_dice", "val_step",
          "val_curve", "global_step", "fit_s", "total_s", "run_dir"]


def write_runs(path: Path, row: str, runs: dict[tuple[int, int], tuple[float, float | None]], fit_s: float = 10.0,
               early: dict[tuple[int, int], float] | None = None) -> Path:
    """A runs.csv as benchmarks.reproduce writes it: {(fold, seed): (test Dice, last validation Dice or None)};
    ``early``: the validation after 250 of the 1,000 iterations (else the last one's value)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for (fold, seed), (test, val) in runs.items():
            writer.writerow({"study": "table4", "row": row, "config": "x", "key": "x-0", "fold": fold, "seed": seed,
                             "predictor": "ens", "mean_dice": test, "liver": test, "val_dice": "" if val is None else val,
                             "val_step": 1000, "global_step": 1000,
                             "val_curve": "" if val is None else f"250:{(early or {}).get((fold, seed), val)} 1000:{val}", "fit_s": fit_s, "total_s": fit_s + 1,
                             "run_dir": f"/runs/x/fold{fold}-seed{seed}"})
    return path


def read(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(newline="")))


def test_keeps_the_seed_with_the_best_validation_not_the_best_test(tmp_path, capsys):
    runs = write_runs(tmp_path / "mkd.csv", "MKD", {
        (0, 0): (0.70, 0.77), (0, 1): (0.80, 0.48),  # the better test run loses on validation
        (0, 2): (0.60, 0.50), (0, 3): (0.65, 0.50),  # a tie: the lower seed
        (1, 0): (0.66, 0.40), (1, 1): (0.62, 0.72),
    }, fit_s=100)
    out = tmp_path / "sel" / "runs.csv"
    assert main([str(runs), "--group", "2", "--out", str(out)]) == 0
    rows = read(out)
    assert [(r["fold"], r["seed"], r["chosen_seed"]) for r in rows] == [("0", "0", "0"), ("0", "1", "2"), ("1", "0", "1")]
    assert [float(r["mean_dice"]) for r in rows] == [0.70, 0.60, 0.62]
    assert {r["row"] for r in rows} == {"MKD (best of 2 on validation)"}
    assert rows[0]["candidates"] == "0:77.0 1:48.0"
    assert float(rows[0]["fit_s"]) == 200 and float(rows[0]["total_s"]) == 202  # the recipe pays for both runs
    assert "| MKD (best of 2 on validation) | 0 | 0 | 0:77.0 1:48.0 | 0 | 70.00 |" in capsys.readouterr().out


def test_the_output_pairs_with_a_selected_baseline_in_compare(tmp_path):
    base = write_runs(tmp_path / "base.csv", "Baseline", {(0, 0): (0.60, 0.5), (0, 1): (0.64, 0.6), (1, 0): (0.50, 0.7), (1, 1): (0.52, 0.4)})
    mkd = write_runs(tmp_path / "mkd.csv", "MKD", {(0, 0): (0.70, 0.77), (0, 1): (0.40, 0.48), (1, 0): (0.45, 0.40), (1, 1): (0.68, 0.72)})
    out = tmp_path / "sel.csv"
    assert main([str(base), str(mkd), "--out", str(out)]) == 0
    table = {e["row"]: e for e in compare(load_rows([out]), "Baseline (best of 2 on validation)")}
    entry = table["MKD (best of 2 on validation)"]
    # fold 0: MKD seed 0 (70) against baseline seed 1 (64); fold 1: MKD seed 1 (68) against baseline seed 0 (50)
    assert entry["per_draw"] == pytest.approx({(0, 0): 6.0, (1, 0): 18.0})


def test_an_incomplete_group_is_left_out_and_said(tmp_path, capsys):
    runs = write_runs(tmp_path / "a.csv", "MKD", {(0, 0): (0.7, 0.7), (0, 1): (0.6, 0.6), (0, 2): (0.5, 0.5)})
    out = tmp_path / "sel.csv"
    assert main([str(runs), "--out", str(out)]) == 0
    assert [r["chosen_seed"] for r in read(out)] == ["0"]
    assert "left out 'MKD' fold 0 draw 1: seeds [2] of 2" in capsys.readouterr().err


def test_bad_input_names_the_file_or_the_option_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sel.csv"
    no_val = write_runs(tmp_path / "a.csv", "MKD", {(0, 0): (0.7, 0.7), (0, 1): (0.6, None)})
    assert main([str(no_val), "--out", str(out)]) == 2
    assert "a.csv: row 'MKD' fold 0 seed 1 has no val_dice" in capsys.readouterr().err

    old = tmp_path / "old.csv"
    old.write_text("row,fold,seed,mean_dice,global_step,fit_s,total_s\nMKD,0,0,0.5,10,1,1\n")
    assert main([str(old), "--out", str(out)]) == 2
    assert "old.csv: no column val_dice" in capsys.readouterr().err

    assert main([str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv: no such runs.csv" in capsys.readouterr().err

    twice = write_runs(tmp_path / "b.csv", "MKD", {(0, 0): (0.7, 0.7), (0, 1): (0.6, 0.5)})
    again = write_runs(tmp_path / "c.csv", "MKD", {(0, 1): (0.6, 0.5)})
    assert main([str(twice), str(again), "--out", str(out)]) == 2
    assert "row 'MKD' fold 0 seed 1 is in more than one file" in capsys.readouterr().err
    assert not out.exists()

    with pytest.raises(SystemExit):
        main([str(twice), "--group", "1", "--out", str(out)])
    assert "--group must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(twice), "--out", str(twice)])
    assert "is one of the inputs" in capsys.readouterr().err
    assert not out.exists()


def test_choosing_early_costs_the_others_only_up_to_there(tmp_path):
    runs = write_runs(tmp_path / "mkd.csv", "MKD", {(0, 0): (0.70, 0.77), (0, 1): (0.80, 0.48)}, fit_s=100,
                      early={(0, 0): 0.30, (0, 1): 0.60})
    out = tmp_path / "sel.csv"
    assert main([str(runs), "--at-step", "250", "--out", str(out)]) == 0
    [row] = read(out)
    assert row["chosen_seed"] == "1" and float(row["mean_dice"]) == 0.80  # the early leader, whatever came later
    assert row["row"] == "MKD (best of 2 on validation at 250)" and row["candidates"] == "0:30.0 1:60.0"
    assert float(row["fit_s"]) == 125 and float(row["total_s"]) == pytest.approx(101 + 101 / 4, abs=0.05)

    assert main([str(runs), "--at-step", "500", "--out", str(out)]) == 2  # no validation there
    with pytest.raises(SystemExit):
        main([str(runs), "--at-step", "0", "--out", str(out)])


def test_files_with_and_without_the_later_columns_combine_but_other_structures_do_not(tmp_path, capsys):
    older = write_runs(tmp_path / "older.csv", "MKD", {(0, 0): (0.7, 0.6)})
    newer = tmp_path / "newer.csv"  # a later harness adds mean_dice_last (--test-weights best)
    rows = read(write_runs(tmp_path / "tmp.csv", "MKD", {(0, 1): (0.5, 0.8)}))
    with newer.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, "mean_dice_last"])
        writer.writeheader()
        writer.writerows([dict(r, mean_dice_last=0.4) for r in rows])
    out = tmp_path / "sel.csv"
    assert main([str(older), str(newer), "--out", str(out)]) == 0
    (chosen,) = read(out)
    assert chosen["chosen_seed"] == "1" and chosen["mean_dice_last"] == "0.4"

    other = tmp_path / "other.csv"
    other.write_text(older.read_text().replace(",liver,", ",spleen,"))
    assert main([str(older), str(other), "--out", str(tmp_path / "x.csv")]) == 2
    assert "other.csv: its columns differ" in capsys.readouterr().err
