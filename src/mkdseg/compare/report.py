"""What a comparison writes from its finished runs: per label count ``n<N>/results.md``, ``runs.csv`` and ``dice.png``,
and ``recommendation.md`` (the tables, the method chosen on validation subjects and the command that trains it)."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from mkdseg.compare.final import FinalRun
from mkdseg.compare.plan import Group, RunPlan
from mkdseg.compare.recommend import Choice, recommend
from mkdseg.compare.runs import curve_cell, machine_description, tested_validation
from mkdseg.compare.studies import Study, StudyRow
from mkdseg.compare.tables import aggregate, bar_chart, markdown_table, structures_of
from mkdseg.data.cache import SliceCache


@dataclass(frozen=True)
class Row:  # a table row with its predictor resolved (a study row may leave it to the method's primary one)
    label: str
    predictor: str
    paper: float | None = None


@dataclass(frozen=True)
class Recommendation:
    text: str  # recommendation.md
    final: FinalRun | None  # the last label count's recommended row, as a model to train (None: nothing finished)


def write_report(plan: RunPlan, command: str, minutes: float | None, trained: int, failed: int,
                 started: float) -> Recommendation:
    """The tables of every label count with finished runs, and ``OUT/recommendation.md``; ``trained`` and ``failed``
    runs and the wall time since ``started`` (``time.perf_counter``) for its last line."""
    lines = [f"# mkdseg compare: {plan.out}", ""]
    final = None
    for n in plan.runs:
        by_group = plan.finished(n)
        rows = {row: by_group[row.group] for row in plan.study.rows if by_group.get(row.group)}
        if not rows:
            continue
        tag = "all" if n is None else str(n)
        note = score_note(plan.cache)
        table = write_tables(plan.out / f"n{tag}", plan.study, rows, plan.reference, plan.runs[n], tag, note)
        predictors = {row.label: entry["row"].predictor for row, entry in zip(rows, table)}
        choice = recommend({row.label: runs for row, runs in rows.items()}, predictors)
        chosen = next(row for row in rows if row.label == choice.method)
        final = plan.final_run(n, chosen)
        lines += [f"## {tag} labelled target subject(s) per training fold", "", note, "",
                  markdown_table(table, any(row.paper is not None for row in rows), plan.reference, with_time=True,
                                 paper_column=plan.study.paper_column), "",
                  f"Recommended: **{choice.method}** (validation Dice {100 * choice.val_dice:.2f}, mean over "
                  f"{choice.draws} draw(s) of the validation subjects of the training fold; test subjects choose nothing)", "",
                  *([separation_note(choice), ""] if choice.runner_up is not None else []),
                  "Train it: `" + final.command + "`", ""]
    lines += [f"Dice (%) on each held-out target fold, mean ± std over {plan.folds} fold(s) × {plan.seeds} seed(s); "
              f"paired: mean of (method − {plan.reference}) on the same fold and seed, and in how many draws it was higher; "
              "min/run: training minutes per run.", "",
              f"- command: `{command}`",
              *([budget_line(minutes, plan.budgets, plan.study)] if minutes is not None else []),
              f"- {trained} run(s) trained, {failed} failed, "
              f"wall {(time.perf_counter() - started) / 60:.1f} min; machine: {machine_description()}"]
    text = "\n".join(lines) + "\n"
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "recommendation.md").write_text(text)
    return Recommendation(text, final)


def score_note(cache: Path | None) -> str:
    """What the tables' Dice is, by the field of view of the cache the runs trained and were tested on."""
    if cache is not None and SliceCache(cache).field_of_view == "structures":
        return ("Dice (%) with the organs located from the label: each held-out target scan cut around its labelled "
                "structures (the papers' protocol, a cache made with `--field-of-view structures`), not what "
                "`mkdseg segment` gives a user; mean ± std over draws (fold × seed) of the mean over scans.")
    return ("Dice (%) of each held-out target scan segmented whole, as `mkdseg segment` segments it, in the scan's own "
            "grid against its own label file; mean ± std over draws (fold × seed) of the mean over scans.")


def budget_line(minutes: float, budgets: dict[tuple, int], study: Study) -> str:
    """The iteration budget each row got from ``--minutes``, for the report."""
    labels = {row.group: row.label for row in study.rows}
    parts = [f"{labels.get(group, group[0])} {steps}" + ("" if n is None else f" (n={n})")
             for (n, group), steps in budgets.items()]
    return (f"- equal cost: {minutes:g} CPU-minutes of training per run; iterations per run: {', '.join(parts)} "
            "(each method's CPU time per iteration: iteration_costs.json)")


def separation_note(choice: Choice) -> str:
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
                 runs: dict[Group, list], tag: str, note: str) -> list[dict]:
    """``results.md``, ``runs.csv`` and ``dice.png`` of one label count: one table row per study row."""
    rows = resolved_rows(results)
    table = aggregate(list(rows.values()), {rows[r]: runs for r, runs in results.items()}, reference)
    out.mkdir(parents=True, exist_ok=True)
    structures = structures_of(results)
    fields = ["method", "fold", "seed", "predictor", "mean_dice", *structures, "val_dice", "val_step", "val_curve",
              "mean_dice_last", "global_step", "fit_s", "fit_cpu_s", "training_images", "run_dir"]
    dirs = {(group, s.fold, s.seed): s.dir for group, specs in runs.items() for s in specs}
    with_paper = any(row.paper is not None for row in rows.values())
    with (out / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for study_row, finished in results.items():
            method, p = rows[study_row].label, rows[study_row].predictor
            for r in finished:
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
