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
from monai.metrics import compute_average_surface_distance
from torchmetrics.functional.classification import multiclass_confusion_matrix


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
    pred = torch.as_tensor(np.ascontiguousarray(prediction)).long().cpu()
    gt = torch.as_tensor(np.ascontiguousarray(ground_truth)).long().cpu()
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} must be equal [S, H, W]")
    for what, labels in (("prediction", pred), ("ground truth", gt)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{what} holds class {int(labels.max())}, outside 0..{num_classes - 1} ({', '.join(structures)})")
    # Dice from the confusion matrix of voxel counts (truth x prediction): exact, and ~15x faster than one-hot
    # tensors over a whole CT (MONAI's compute_dice); a structure absent from both is NaN (policy above).
    # The classes were checked above, so torchmetrics' own checks would only read the volume twice more.
    counts = multiclass_confusion_matrix(pred.flatten(), gt.flatten(), num_classes, validate_args=False)
    overlap, in_gt, in_pred = counts.diagonal()[1:].double(), counts.sum(1)[1:].double(), counts.sum(0)[1:].double()
    gt_present, pred_present = in_gt > 0, in_pred > 0
    dice = torch.where(gt_present | pred_present, 2 * overlap / (in_gt + in_pred).clamp(min=1), torch.nan)
    names = list(structures)
    out = {name: {"dice": float(dice[i])} for i, name in enumerate(names)}
    if with_assd:
        assd = torch.full((num_classes - 1,), float("nan"))
        both = pred_present & gt_present
        if both.any():  # only where both surfaces exist: elsewhere ASSD is undefined (policy above)
            # surface distances depend only on the voxels near either foreground: the box around both, a voxel wider
            box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in torch.nonzero((pred > 0) | (gt > 0)).unbind(1))
            p1, g1 = _onehot(pred[box], num_classes), _onehot(gt[box], num_classes)
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


def worst_volumes(rows: list[dict], metric: str = "dice") -> dict[str, dict]:
    """Per predictor, the volume whose mean ``metric`` over its defined structures is lowest:
    ``{predictor: {"subject": ..., metric: value}}`` (what a user of the model fears most)."""
    per_volume: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        per_volume.setdefault(r["predictor"], {}).setdefault(r["subject"], []).append(r[metric])
    worst = {}
    for predictor, volumes in sorted(per_volume.items()):
        means = {subject: _nanmean(values) for subject, values in volumes.items()}
        scored = {s: m for s, m in means.items() if not math.isnan(m)}
        if scored:
            subject = min(scored, key=scored.get)
            worst[predictor] = {"subject": subject, metric: scored[subject]}
    return worst


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
