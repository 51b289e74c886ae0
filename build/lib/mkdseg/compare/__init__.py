"""``mkdseg compare``: train several methods on the same draws of the user's data and recommend one.

:mod:`~mkdseg.compare.runs` trains one run (or many, in parallel processes) from LightningCLI configs,
:mod:`~mkdseg.compare.tables` writes the tables, :mod:`~mkdseg.compare.recommend` chooses on validation
subjects, :mod:`~mkdseg.compare.cli` is the command. ``presets/`` holds the size configs (cpu, gpu) and
the methods (one yaml each), which ``mkdseg fit --config`` also takes.
"""

from mkdseg.compare.recommend import Choice, recommend
from mkdseg.compare.runs import RunSpec, run_one, train

__all__ = ["Choice", "RunSpec", "recommend", "run_one", "train"]
