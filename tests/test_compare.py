"""benchmarks.compare: rows of different studies paired on the same fold and seed."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level package of the repository, not of mkdseg
from benchmarks.compare import compare, load_rows, main  # noqa: E402

FIELDS = ["study", "row", "config", "key", "fold", "seed", "predictor", "mean_dice", "liver", "global_step",
          "fit_s", "total_s", "run_dir"]


def write_runs(path: Path, row: str, dice_by_draw: dict[tuple[int, int], float | None], fit_s: float = 10.0) -> Path:
    """A runs.csv as benchmarks.reproduce writes it (Dice as fractions); None: a run without a Dice."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for (fold, seed), dice in dice_by_draw.items():
            writer.writerow({"study": "table1", "row": row, "config": "x", "key": "x-0", "fold": fold, "seed": seed,
                             "predictor": "seg", "mean_dice": "" if dice is None else dice, "liver": dice,
                             "global_step": 10, "fit_s": fit_s, "total_s": fit_s, "run_dir": "/runs/x"})
    return path


def test_pairs_rows_of_different_files_on_the_same_draw(tmp_path):
    base = write_runs(tmp_path / "a.csv", "Baseline", {(0, 0): 0.40, (0, 1): 0.50, (1, 0): 0.60}, fit_s=50)
    other = write_runs(tmp_path / "b.csv", "Other", {(0, 0): 0.45, (0, 1): 0.48, (1, 0): 0.70, (1, 1): 0.9}, fit_s=200)
    table = {e["row"]: e for e in compare(load_rows([base, other]), "Baseline")}
    entry = table["Other"]
    # (1, 1) has no baseline run: it counts in the mean over draws, not in the pairing
    assert entry["per_draw"] == pytest.approx({(0, 0): 5.0, (0, 1): -2.0, (1, 0): 10.0})
    assert entry["paired"] == pytest.approx(13.0 / 3)
    assert entry["better"] == 2
    assert entry["draws"] == 4 and entry["mean"] == pytest.approx(63.25)
    assert entry["fit_s"] == pytest.approx(200)
    assert table["Baseline"]["std"] == pytest.approx(8.1650, abs=1e-3)  # population std, as the harness


def test_a_run_without_dice_is_left_out(tmp_path):
    path = write_runs(tmp_path / "a.csv", "Baseline", {(0, 0): 0.40, (0, 1): None})
    assert list(load_rows([path])["Baseline"]) == [(0, 0)]


def test_the_same_row_and_draw_in_two_files_is_refused(tmp_path):
    a = write_runs(tmp_path / "a.csv", "Baseline", {(0, 0): 0.40})
    b = write_runs(tmp_path / "b.csv", "Baseline", {(0, 0): 0.45})
    with pytest.raises(ValueError, match=r"'Baseline' fold 0 seed 0 is in both .*a\.csv and .*b\.csv"):
        load_rows([a, b])


def test_bad_input_names_the_file_or_the_option(tmp_path, capsys):
    path = write_runs(tmp_path / "a.csv", "Baseline", {(0, 0): 0.40})
    assert main([str(path), "--reference", "Joint"]) == 2
    assert "--reference 'Joint' is none of the rows: 'Baseline'" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such runs.csv" in capsys.readouterr().err
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main([str(tmp_path / "other.csv")]) == 2
    assert "other.csv: not a benchmarks.reproduce runs.csv" in capsys.readouterr().err


def test_prints_a_markdown_table(tmp_path, capsys):
    base = write_runs(tmp_path / "a.csv", "Baseline", {(0, 0): 0.40, (0, 1): 0.50})
    other = write_runs(tmp_path / "b.csv", "Joint", {(0, 0): 0.45, (0, 1): 0.48})
    assert main([str(base), str(other), "--reference", "Baseline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| row | mean ± std | paired vs Baseline |")
    assert lines[3] == "| Joint | 46.50 ± 1.50 | +1.50 | 1/2 | (0,0) +5.00, (0,1) -2.00 | 2 | 10 |"


def test_final_weights_of_best_validation_runs_become_their_own_row(tmp_path):
    path = tmp_path / "best.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, "mean_dice_last"])
        writer.writeheader()
        for fold, (best, last) in enumerate([(0.60, 0.55), (0.50, 0.52)]):
            writer.writerow({"row": "Joint", "fold": fold, "seed": 0, "mean_dice": best, "mean_dice_last": last, "fit_s": 5})
    assert set(load_rows([path])) == {"Joint"}
    table = {e["row"]: e for e in compare(load_rows([path], final_weights=True), "Joint (final weights)")}
    assert table["Joint"]["per_draw"] == pytest.approx({(0, 0): 5.0, (1, 0): -2.0})
    assert table["Joint (final weights)"]["mean"] == pytest.approx(53.5)
