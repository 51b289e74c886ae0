"""The lab: timing and study scripts that are not product commands, each run as ``python -m benchmarks.<script>``
from the repository root and smoke-tested at a tiny size by the test suite. Studies of methods are ``mkdseg compare``
studies (``--study``); their tables are in ``benchmarks/results/``."""
