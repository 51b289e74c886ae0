"""summary.json and per_case.csv: written by the EvaluationReportWriter callback, not by the method."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from mkdseg.callbacks import EvaluationReportWriter, write_reports

from conftest import make_datamodule, make_model, quiet_trainer


def test_report_writer_writes_the_methods_test_evaluation(tmp_path, phantom_root):
    trainer = quiet_trainer(default_root_dir=str(tmp_path), callbacks=[EvaluationReportWriter()])
    model, dm = make_model(), make_datamodule(phantom_root)
    trainer.test(model, datamodule=dm, verbose=False)
    summary = model.evaluation_summary("test")
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(written) == {"dice", "assd", "worst_case"} and set(written["dice"]) == set(summary["dice"]) == {"ens", "syn", "real"}
    assert math.isclose(written["dice"]["ens"]["mean"]["mean"], summary["dice"]["ens"]["mean"]["mean"])
    rows = list(csv.DictReader((tmp_path / "per_case.csv").open()))
    assert list(rows[0]) == ["predictor", "subject", "structure", "dice", "assd"]
    assert len(rows) == len(summary["rows"]) == 3 * len(dm.test_records) * 7  # predictors x volumes x structures


def test_method_alone_writes_no_files(tmp_path, phantom_root):
    """Without the callback a test still evaluates and logs, and leaves the run folder alone."""
    trainer = quiet_trainer(default_root_dir=str(tmp_path))
    model = make_model()
    trainer.test(model, datamodule=make_datamodule(phantom_root), verbose=False)
    assert "test/dice_ens" in trainer.callback_metrics and model.evaluation_summary("test")["rows"]
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "per_case.csv").exists()


def test_report_writer_skips_modules_without_an_evaluation(tmp_path):
    class Plain:
        def evaluation_summary(self, stage):
            raise LookupError(stage)

    trainer = quiet_trainer(default_root_dir=str(tmp_path))
    EvaluationReportWriter().on_test_end(trainer, Plain())
    EvaluationReportWriter().on_test_end(trainer, object())  # not an mkdseg method
    assert list(Path(tmp_path).iterdir()) == []


def test_nan_cells_are_empty(tmp_path):
    rows = [{"predictor": "seg", "subject": "a", "structure": "LV", "dice": 0.5, "assd": float("nan")}]
    write_reports({"rows": rows, "dice": {}}, tmp_path / "out")
    assert (tmp_path / "out" / "per_case.csv").read_text().splitlines()[1] == "seg,a,LV,0.5,"
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"dice": {}, "assd": {},
                                                                         "worst_case": {"seg": {"subject": "a", "dice": 0.5}}}
