"""Tables of finished runs: mean ± std over draws, per structure, and the paired difference to a reference.

A *row* is anything with ``label``, ``predictor`` and ``paper`` (the paper's number, or ``None``); a *run* is a
``result.json`` dict (``fold``, ``seed``, ``dice[predictor][structure]``, ``fit_s``).
"""

from __future__ import annotations

import math
from pathlib import Path


def stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, population std, count) of the finite values."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)), len(finite)


def structures_of(results: dict) -> list[str]:
    """The structures the runs report, in class order (the data's, recorded in each run's result)."""
    names: dict[str, None] = {}
    for runs in results.values():
        for run in runs:
            for entry in run["dice"].values():
                names.update((k, None) for k in entry if k != "mean")
    return list(names)


def table_structures(table: list[dict]) -> list[str]:
    return [k for k in table[0]["cells"] if k != "mean"] if table else []


def aggregate(rows: list, results: dict, reference_label: str | None) -> list[dict]:
    """Per row: mean, std (over runs) and count of the run-level mean Dice and each structure's, the
    paired difference to the row labelled ``reference_label`` (see :func:`paired_difference`) and the mean
    training time per run (``fit_s``, and ``fit_cpu_s``: the process's CPU time, where the runs recorded it) and
    iterations per run (``steps``)."""
    table = []
    structures = structures_of(results)
    reference = next((row for row in rows if row.label == reference_label), None)
    for row in rows:
        runs = [r for r in results.get(row, []) if row.predictor in r["dice"]]
        cells = {column: stats([r["dice"][row.predictor].get(column, float("nan")) for r in runs])
                 for column in ["mean", *structures]}
        paired = None
        if reference is not None and row != reference:
            paired = paired_difference(runs, row.predictor, results.get(reference, []), reference.predictor)
        fit_s = stats([r.get("fit_s", float("nan")) for r in runs])[0]
        fit_cpu_s = stats([r.get("fit_cpu_s", float("nan")) for r in runs])[0]
        steps = stats([r.get("global_step", float("nan")) for r in runs])[0]
        table.append({"row": row, "cells": cells, "runs": len(runs), "paired": paired, "fit_s": fit_s,
                      "fit_cpu_s": fit_cpu_s, "steps": steps})
    return table


def paired_difference(runs: list[dict], predictor: str, reference_runs: list[dict], reference_predictor: str):
    """(mean difference, draws better, draws compared) of the run-level mean Dice against the reference
    run of the same fold and seed: which labelled subjects a draw gets moves every method by several
    points, so the paired difference is the comparison that draw-to-draw spread does not drown."""
    reference = {(r["fold"], r["seed"]): r["dice"][reference_predictor]["mean"] for r in reference_runs
                 if reference_predictor in r["dice"]}
    diffs = [r["dice"][predictor]["mean"] - reference[(r["fold"], r["seed"])] for r in runs
             if (r["fold"], r["seed"]) in reference]
    if not diffs:
        return None
    return sum(diffs) / len(diffs), sum(d > 0 for d in diffs), len(diffs)


def _cell(stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    return "n/a" if n == 0 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(table: list[dict], with_paper: bool, reference: str = "baseline", with_time: bool = False,
                   paper_column: str = "Paper") -> str:
    structures = table_structures(table)
    with_paired = any(entry.get("paired") for entry in table)
    timed = ["min/run", "CPU-min/run", "iterations"] if with_time else []
    header = (["Method", "Mean Dice"] + ([f"vs {reference}, paired"] if with_paired else []) + structures
              + ([paper_column] if with_paper else []) + timed + ["runs"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in table:
        row = entry["row"]
        cells = [row.label, _cell(entry["cells"]["mean"])]
        if with_paired:
            paired = entry.get("paired")
            cells.append(f"{100 * paired[0]:+.2f} ({paired[1]} of {paired[2]} better)" if paired else "")
        cells += [_cell(entry["cells"][s]) for s in structures]
        if with_paper:
            cells.append("" if row.paper is None else f"{row.paper:.2f}")
        if with_time:
            for key in ("fit_s", "fit_cpu_s"):
                seconds = entry.get(key, float("nan"))
                cells.append("n/a" if math.isnan(seconds) else f"{seconds / 60:.1f}")
            steps = entry.get("steps", float("nan"))
            cells.append("n/a" if math.isnan(steps) else f"{steps:.0f}")
        cells.append(str(entry["runs"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(table: list[dict], title: str, path: Path, paper_label: str = "paper") -> None:
    """Mean Dice per row (with the paper's, where a row has one) beside a per-structure heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [e["row"].label for e in table]
    means = np.array([100 * e["cells"]["mean"][0] for e in table])
    stds = np.array([100 * e["cells"]["mean"][1] for e in table])
    structures = table_structures(table)
    per_structure = np.array([[100 * e["cells"][s][0] for s in structures] for e in table])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 0.45 * len(table) + 2), gridspec_kw={"width_ratios": [1.2, 1]})
    y = np.arange(len(table))
    ax.barh(y, np.nan_to_num(means), xerr=np.nan_to_num(stds), color="#4c72b0", capsize=3, label="this run (mean ± std)")
    paper = [(i, e["row"].paper) for i, e in enumerate(table) if e["row"].paper is not None]
    if paper:
        ax.scatter([p for _, p in paper], [i for i, _ in paper], marker="D", color="#c44e52", zorder=3, label=paper_label)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    finite = means[np.isfinite(means)]
    low = min([*finite, *(p for _, p in paper)], default=0.0)
    ax.set_xlim(max(0.0, low - 10), 100)
    ax.set_xlabel("mean Dice (%)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08 - 1.2 / (len(table) + 4)), ncol=2)
    ax.grid(axis="x", alpha=0.3)
    im = ax2.imshow(per_structure, cmap="viridis", vmin=max(0.0, np.nanmin(per_structure) if np.isfinite(per_structure).any() else 0), vmax=100, aspect="auto")
    ax2.set_xticks(range(len(structures)), structures, fontsize=8, rotation=30 if len(structures) > 7 else 0)
    ax2.set_yticks(y, [""] * len(y))
    for i in range(per_structure.shape[0]):
        for j in range(per_structure.shape[1]):
            if np.isfinite(per_structure[i, j]):
                ax2.text(j, i, f"{per_structure[i, j]:.0f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax2, fraction=0.04, label="Dice (%)")
    ax2.set_title("per structure", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_compact_png(fig, path)
    plt.close(fig)


def save_compact_png(fig, path: Path, colours: int = 32) -> None:
    """``fig`` as a PNG of ``colours`` palette colours: a chart has a few flat colours, and a study's figures are
    committed with its tables (a fifth of matplotlib's full-colour file, no visible difference)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    image = Image.open(buffer).convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
