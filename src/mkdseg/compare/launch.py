"""Where a comparison's runs train. A launcher trains the pending runs, yielding ``(tag, spec, result)`` per run as
it finishes (``result`` with ``"error"`` and ``"see"``, where to read more, for a failed run), and the final model.

:class:`LocalLauncher` trains on this machine (in this process, or ``--jobs`` processes at a time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from mkdseg.compare.final import FinalRun, announce, announce_start, fit_final
from mkdseg.compare.runs import RunSpec, train


class Launcher(Protocol):
    #: whether the runs train on this machine (so that --minutes may measure their cost per iteration here)
    trains_here: bool

    def train(self, pending: Sequence[tuple[str, RunSpec]]) -> Iterator[tuple[str, RunSpec, dict]]: ...

    def train_final(self, final: FinalRun) -> int: ...


class LocalLauncher:
    trains_here = True

    def __init__(self, jobs: int, threads: int | None):
        self.jobs, self.threads = jobs, threads

    def train(self, pending: Sequence[tuple[str, RunSpec]]) -> Iterator[tuple[str, RunSpec, dict]]:
        return train(list(pending), self.jobs, self.threads)

    def train_final(self, final: FinalRun) -> int:
        announce_start(final)
        announce(final, fit_final(final))
        return 0
