"""Which method to train: chosen on validation subjects of the training folds, never on test subjects."""

from __future__ import annotations

from dataclasses import dataclass

from mkdseg.compare.runs import tested_validation


@dataclass(frozen=True)
class Choice:
    method: str
    val_dice: float  # mean over draws of the validation Dice of the weights each run tested
    draws: int


def validation_scores(results: dict[str, list[dict]], predictors: dict[str, str] | None = None) -> dict[str, tuple[float, int]]:
    """``{method: (mean validation Dice over its runs, runs)}`` of each method's predictor (``predictors``, else its
    primary one), on the validation subjects that picked the weights it tested; methods without a validation are
    left out."""
    scores = {}
    for method, runs in results.items():
        values = [tested_validation(r, (predictors or {}).get(method, r["primary_predictor"]))["val_dice"] for r in runs]
        values = [v for v in values if v is not None]
        if values:
            scores[method] = (sum(values) / len(values), len(values))
    return scores


def recommend(results: dict[str, list[dict]], predictors: dict[str, str] | None = None) -> Choice:
    """The method with the best mean validation Dice; only methods with as many finished draws as the most
    complete one compete (a method that failed on a draw is not compared on fewer, easier draws)."""
    scores = validation_scores(results, predictors)
    if not scores:
        raise ValueError("no run has a validation Dice to choose on (data.n_val must be > 0)")
    most = max(n for _, n in scores.values())
    method, (val_dice, draws) = max(((m, s) for m, s in scores.items() if s[1] == most), key=lambda item: item[1][0])
    return Choice(method, val_dice, draws)
