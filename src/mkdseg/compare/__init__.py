"""``mkdseg compare``: train several methods on the same draws of the user's data and recommend one.

:mod:`~mkdseg.compare.cli` parses the options; :mod:`~mkdseg.compare.plan` says which runs (configs from
:mod:`~mkdseg.compare.configs`, iteration budgets from :mod:`~mkdseg.compare.budget` under ``--minutes``, the slice
cache from :mod:`~mkdseg.compare.cache`) and which are finished; a launcher (:mod:`~mkdseg.compare.launch`: this machine, or
:mod:`~mkdseg.compare.slurm`: a SLURM job per run, :mod:`~mkdseg.compare.job`) trains the others, each run by
:mod:`~mkdseg.compare.runs`; :mod:`~mkdseg.compare.report` writes the tables
(:mod:`~mkdseg.compare.tables`) and the method :mod:`~mkdseg.compare.recommend` chooses on validation subjects,
which :mod:`~mkdseg.compare.final` trains. ``presets/`` holds the size configs (cpu, gpu) and the methods (one yaml each), which ``mkdseg fit
--config`` also takes; ``studies/`` the paper's tables and the studies beside them.
"""

from mkdseg.compare.recommend import Choice, recommend
from mkdseg.compare.runs import RunSpec, run_one, train

__all__ = ["Choice", "RunSpec", "recommend", "run_one", "train"]
