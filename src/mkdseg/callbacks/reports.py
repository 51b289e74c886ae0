"""The result files of a test: ``summary.json`` and ``per_case.csv`` in the run folder.

The method computes and logs the evaluation (:meth:`mkdseg.methods.base.SegmentationMethod.evaluation_summary`);
writing it to files is a callback's job, :class:`EvaluationReportWriter`, which ``mkdseg`` registers
for every run (``trainer_defaults`` in :mod:`mkdseg.training`). A plain ``L.Trainer`` writes them when given it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L

from mkdseg.io import atomic_write_text
from mkdseg.metrics import worst_volumes

REPORT_FIELDS = ("predictor", "subject", "structure", "dice", "assd")


class EvaluationReportWriter(L.Callback):
    """After each test: ``summary.json`` and ``per_case.csv`` (:func:`write_reports`) of the module's test
    evaluation, in ``trainer.log_dir`` (or ``default_root_dir`` without a logger), written by rank 0."""

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        # on_test_end, not on_test_epoch_end: Lightning calls the callbacks' epoch-end hooks before the
        # module's, where the evaluation is summarised
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: on every rank
        try:
            result = pl_module.evaluation_summary("test")
        except (AttributeError, LookupError):  # not an mkdseg method, or nothing evaluated
            return
        if trainer.is_global_zero:
            write_reports(result, out_dir)


def write_reports(result: dict, out_dir: Path) -> None:
    """``summary.json`` (means, stds, counts, and each predictor's worst volume) and ``per_case.csv`` (one row per volume, structure, predictor)
    of an evaluation summary (``{"rows", "dice"}`` and optionally ``"assd"`` and ``"postprocessing"``, which
    structures validation decided to keep the largest component of)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"dice": result["dice"], "assd": result.get("assd", {}), "worst_case": worst_volumes(result["rows"])}
    if result.get("postprocessing"):  # the checkpoint's validation decision the scores were post-processed with
        summary["postprocessing"] = {"keep_largest": result["postprocessing"].get("keep_largest", {}),
                                     "decided_at_step": result["postprocessing"].get("step")}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1, allow_nan=True))
    lines = [",".join(REPORT_FIELDS)]
    for r in sorted(result["rows"], key=lambda r: (r["predictor"], r["subject"])):  # structures in class order
        lines.append(",".join(_csv_cell(r.get(f, "")) for f in REPORT_FIELDS))
    atomic_write_text(out_dir / "per_case.csv", "\n".join(lines) + "\n")


def _csv_cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
