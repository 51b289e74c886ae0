"""benchmarks/validation_signal.py: whether validation points the way the test scans do, read from finished runs."""

from __future__ import annotations

import json

from benchmarks import validation_signal


def _run(key: str, fold: int, seed: int, test: float, val: float) -> dict:
    return {"key": key, "fold": fold, "seed": seed, "global_step": 10, "primary_predictor": "seg",
            "dice": {"seg": {"mean": test}}, "val_dice": {"seg": {"mean": val}}, "val_step": 10}


def test_pairs_are_binned_by_their_test_gap_and_scored_by_mean_and_by_fold(tmp_path):
    runs = []
    for fold in (0, 1):
        for seed in (0, 1):
            runs.append(_run("a", fold, seed, 0.80, 0.70))
            # b: 3 points below a on test; validation prefers a in fold 0 only (and by more than fold 1 prefers b)
            runs.append(_run("b", fold, seed, 0.77, 0.60 if fold == 0 else 0.72))
            runs.append(_run("c", fold, seed, 0.50, 0.40))  # far below both, validation agrees everywhere
    study = tmp_path / "study"
    study.mkdir()
    (study / "finished_runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    out = tmp_path / "out"
    assert validation_signal.main([str(study), "--out", str(out)]) == 0
    rows = {r["test_gap"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["2 to 5"] == {"test_gap": "2 to 5", "pairs": 1, "mean_right": 1, "every_fold_right": 0,
                              "every_fold_wrong": 0}
    assert rows["5 to inf"]["pairs"] == 2 and rows["5 to inf"]["every_fold_right"] == 2
    assert "| 2 to 5 | 1 | 1 | 0 | 0 |" in (out / "results.md").read_text()


def test_a_studys_tables_give_the_same_pairs_as_its_record_of_finished_runs(tmp_path):
    """The repository keeps a study's n*/runs.csv (a row per run, its folder naming the configuration), not its
    finished_runs.jsonl: read from the tables, the same runs give the same pairs. A folder's tables win over its
    record."""
    import csv

    runs = [_run(key, fold, seed, test, val) for fold in (0, 1) for seed in (0, 1)
            for key, test, val in (("a", 0.80, 0.70), ("b", 0.77, 0.60 if fold == 0 else 0.72), ("c", 0.50, 0.40))]
    recorded, tabled = tmp_path / "recorded", tmp_path / "tabled"
    recorded.mkdir()
    (recorded / "finished_runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (tabled / "n2").mkdir(parents=True)
    with (tabled / "n2" / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "fold", "seed", "mean_dice", "val_dice", "global_step", "run_dir"])
        writer.writeheader()
        for r in runs:
            writer.writerow({"method": r["key"].upper(), "fold": r["fold"], "seed": r["seed"], "global_step": 10,
                             "mean_dice": r["dice"]["seg"]["mean"], "val_dice": r["val_dice"]["seg"]["mean"],
                             "run_dir": f"/somewhere/runs/{r['key']}/fold{r['fold']}-seed{r['seed']}"})
    # a record that disagrees with the tables: not read where tables exist
    (tabled / "finished_runs.jsonl").write_text(json.dumps(_run("z", 0, 0, 0.1, 0.1)) + "\n")
    assert validation_signal.load_runs([tabled], 10) == validation_signal.load_runs([recorded], 10)
    assert set(validation_signal.load_runs([tabled], 10)) == {"a", "b", "c"}
    assert validation_signal.load_runs([tabled], 11) == {}  # only runs of the asked iteration count
