"""mkdseg: cross-modality medical image segmentation with online mutual knowledge distillation."""

import logging

__version__ = "0.1.0"


class _NoCloudLoggerTip(logging.Filter):
    """Lightning (>= 2.6) prints a tip for a commercial cloud logger at every Trainer's start; our users log to
    CSV or Weights & Biases, so the tip is noise in every run's output. Only that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoCloudLoggerTip())
