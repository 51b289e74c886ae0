"""Which method to train: chosen on validation subjects of the training folds, never on test subjects."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from mkdseg.compare.runs import tested_validation


@dataclass(frozen=True)
class Choice:
    method: str
    val_dice: float  # mean over draws of the validation Dice of the weights each run tested
    draws: int
    runner_up: str | None = None  # the next best on validation among the methods that competed
    runner_up_val_dice: float | None = None
    # per fold: mean over its seeds of (method - runner-up) validation Dice, paired on the draw. A fold's validation
    # subjects are the same for every seed, so the folds, not the draws, are the independent validation sets
    fold_margins: dict[int, float] = field(default_factory=dict)

    @property
    def separated(self) -> bool:
        """Whether every fold's validation subjects prefer the method to the runner-up (with one method, trivially)."""
        return self.runner_up is None or (bool(self.fold_margins) and all(m > 0 for m in self.fold_margins.values()))


def _validation(run: dict, predictor: str | None) -> float | None:
    """The validation Dice of the weights a run tested, of ``predictor`` (``None``: the run's primary one)."""
    return tested_validation(run, predictor or run["primary_predictor"])["val_dice"]


def validation_scores(results: dict[str, list[dict]], predictors: dict[str, str] | None = None) -> dict[str, tuple[float, int]]:
    """``{method: (mean validation Dice over its runs, runs)}`` of each method's predictor (``predictors``, else its
    primary one), on the validation subjects that picked the weights it tested; methods without a validation are
    left out."""
    scores = {}
    for method, runs in results.items():
        values = [_validation(r, (predictors or {}).get(method)) for r in runs]
        values = [v for v in values if v is not None]
        if values:
            scores[method] = (sum(values) / len(values), len(values))
    return scores


def recommend(results: dict[str, list[dict]], predictors: dict[str, str] | None = None) -> Choice:
    """The method with the best mean validation Dice; only methods with as many finished draws as the most
    complete one compete (a method that failed on a draw is not compared on fewer, easier draws). The choice
    carries the runner-up and, per fold, the validation margin over it: a margin whose sign differs between folds
    means the validation subjects do not separate the two."""
    scores = validation_scores(results, predictors)
    if not scores:
        raise ValueError("no run has a validation Dice to choose on (data.n_val must be > 0)")
    most = max(n for _, n in scores.values())
    ranked = sorted(((m, s) for m, s in scores.items() if s[1] == most), key=lambda item: item[1][0], reverse=True)
    method, (val_dice, draws) = ranked[0]
    if len(ranked) == 1:
        return Choice(method, val_dice, draws)
    runner_up, (runner_up_val, _) = ranked[1]
    margins = fold_margins(results[method], results[runner_up], (predictors or {}).get(method),
                           (predictors or {}).get(runner_up))
    return Choice(method, val_dice, draws, runner_up, runner_up_val, margins)


def fold_margins(runs: list[dict], other: list[dict], predictor: str | None = None,
                 other_predictor: str | None = None) -> dict[int, float]:
    """``{fold: mean over the fold's seeds of (validation Dice of runs - of other)}``, paired on (fold, seed); draws
    without a fold and seed (or a validation) in both are left out."""
    def by_draw(rs: list[dict], pred: str | None) -> dict[tuple[int, int], float]:
        values = {}
        for r in rs:
            if "fold" in r and "seed" in r:
                value = _validation(r, pred)
                if value is not None:
                    values[(int(r["fold"]), int(r["seed"]))] = value
        return values

    mine, theirs = by_draw(runs, predictor), by_draw(other, other_predictor)
    per_fold = defaultdict(list)
    for draw in sorted(mine.keys() & theirs.keys()):
        per_fold[draw[0]].append(mine[draw] - theirs[draw])
    return {fold: sum(d) / len(d) for fold, d in per_fold.items()}
