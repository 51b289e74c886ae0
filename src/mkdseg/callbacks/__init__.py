"""The Lightning callbacks every run gets (``mkdseg.training.build_cli``'s trainer defaults) and those a caller adds:
the Dice table and sample figures (:mod:`.training`), the final ``last.ckpt``, the validation history, the evaluation
reports (:mod:`.reports`) and the label-map writer of ``mkdseg predict`` (:mod:`.prediction_writer`)."""

from mkdseg.callbacks.prediction_writer import VolumePredictionWriter
from mkdseg.callbacks.reports import EvaluationReportWriter, write_reports
from mkdseg.callbacks.run_logs import DiceTableCallback, FinalLastCheckpoint, MetricHistory, SampleImagesCallback, run_dir

__all__ = ["DiceTableCallback", "EvaluationReportWriter", "FinalLastCheckpoint", "MetricHistory", "SampleImagesCallback",
           "VolumePredictionWriter", "run_dir", "write_reports"]
