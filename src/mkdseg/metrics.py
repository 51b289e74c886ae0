"""Per-structure segmentation metrics for one volume, and their summary over volumes.

Empty-structure policy (the same in validation, test and every report):
- structure absent from both ground truth and prediction: Dice and ASSD are undefined (NaN) and that
  volume is left out of the structure's mean (nnU-Net does the same);
- absent from exactly one of them: Dice is 0; ASSD is undefined (NaN) because a surface distance to
  nothing has no finite value. The summary reports for every structure how many volumes entered its mean.
Means over volumes and over structures ignore NaNs; a structure with no valid volume has mean NaN and
is shown as such rather than as a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice


def _onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[S, H, W]`` int -> ``[1, C, S, H, W]`` float one-hot (MONAI's batch-first layout)."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).permute(3, 0, 1, 2).unsqueeze(0).float()


def volume_scores(
    prediction: torch.Tensor | np.ndarray,
    ground_truth: torch.Tensor | np.ndarray,
    structures: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    with_assd: bool = False,
) -> dict[str, dict[str, float]]:
    """Dice (and ASSD in mm of ``spacing``) per foreground structure for one ``[S, H, W]`` label volume
    whose classes ``1..len(structures)`` are ``structures`` (0 is background).

    Returns ``{structure_name: {"dice": float, "assd": float}}`` (ASSD only with ``with_assd``).
    """
    num_classes = len(structures) + 1
    pred = torch.as_tensor(np.asarray(prediction)).long().cpu()
    gt = torch.as_tensor(np.asarray(ground_truth)).long().cpu()
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} must be equal [S, H, W]")
    for what, labels in (("prediction", pred), ("ground truth", gt)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{what} holds class {int(labels.max())}, outside 0..{num_classes - 1} ({', '.join(structures)})")
    p1, g1 = _onehot(pred, num_classes), _onehot(gt, num_classes)
    dice = compute_dice(p1, g1, include_background=False, ignore_empty=False)[0]
    pred_present = p1[0, 1:].flatten(1).any(1)
    gt_present = g1[0, 1:].flatten(1).any(1)
    both_empty = ~(pred_present | gt_present)
    dice[both_empty] = float("nan")
    names = list(structures)
    out = {name: {"dice": float(dice[i])} for i, name in enumerate(names)}
    if with_assd:
        assd = torch.full((num_classes - 1,), float("nan"))
        both = pred_present & gt_present
        if both.any():  # only where both surfaces exist: elsewhere ASSD is undefined (policy above)
            keep = torch.nonzero(both).flatten() + 1
            values = compute_average_surface_distance(
                p1[:, keep], g1[:, keep], include_background=True, symmetric=True, spacing=[float(s) for s in spacing]
            )[0]
            assd[both] = values.float()
        for i, name in enumerate(names):
            out[name]["assd"] = float(assd[i])
    return out


def summarize(rows: list[dict], metric: str = "dice") -> dict[str, dict[str, dict[str, float]]]:
    """Mean, std and count over volumes per predictor and structure.

    ``rows``: dicts with keys ``predictor``, ``subject``, ``structure``, and metric values.
    Returns ``{predictor: {structure | "mean": {"mean": m, "std": s, "n": count}}}``; the "mean" entry
    averages each volume's mean over its defined structures.
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for predictor in sorted({r["predictor"] for r in rows}):
        prow = [r for r in rows if r["predictor"] == predictor]
        entry: dict[str, dict[str, float]] = {}
        structures = list(dict.fromkeys(r["structure"] for r in prow))
        for s in structures:
            entry[s] = _stats([r[metric] for r in prow if r["structure"] == s])
        per_volume = {}
        for r in prow:
            per_volume.setdefault(r["subject"], []).append(r[metric])
        entry["mean"] = _stats([_nanmean(v) for v in per_volume.values()])
        table[predictor] = entry
    return table


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _stats(values: Sequence[float]) -> dict[str, float]:
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def format_table(summary: dict[str, dict[str, dict[str, float]]], metric: str = "Dice", scale: float = 100.0) -> str:
    """Markdown table: one row per predictor, mean then one column per structure, ``mean ± std``."""
    predictors = list(summary)
    if not predictors:
        return "(no volumes evaluated)"
    columns = ["mean"] + [k for k in summary[predictors[0]] if k != "mean"]
    header = f"| {metric} | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for p in predictors:
        cells = []
        for c in columns:
            st = summary[p].get(c, {"mean": float("nan"), "std": float("nan")})
            cells.append("n/a" if math.isnan(st["mean"]) else f"{st['mean'] * scale:.2f} ± {st['std'] * scale:.2f}")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
