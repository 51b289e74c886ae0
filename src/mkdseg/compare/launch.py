"""Where a comparison's runs train. A launcher trains the pending runs, yielding ``(tag, spec, result)`` per run as
it finishes (``result`` with ``"error"`` and ``"see"``, where to read more, for a failed run), and the final model.

:class:`LocalLauncher` trains on this machine (in this process, or ``--jobs`` processes at a time);
:class:`~mkdseg.compare.slurm.SlurmLauncher` hands each run to a SLURM cluster as a job (``--launcher slurm``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import yaml

from mkdseg.compare.final import FinalRun, announce, announce_start, fit_final
from mkdseg.compare.runs import RunSpec, train
from mkdseg.compare.slurm import SlurmLauncher, SlurmResources, default_gpus

#: seconds between two looks at the SLURM queue: often enough for runs of minutes, rare enough for a busy controller
SLURM_POLL_S = 10.0


class Launcher(Protocol):
    def train(self, pending: Sequence[tuple[str, RunSpec]]) -> Iterator[tuple[str, RunSpec, dict]]: ...

    def train_final(self, final: FinalRun) -> int: ...

    def note_pending(self, pending: Sequence[tuple[str, RunSpec]]) -> None:
        """Under ``--report-only``: say what may still finish the unfinished runs."""


class LocalLauncher:
    def __init__(self, jobs: int, threads: int | None):
        self.jobs, self.threads = jobs, threads

    def train(self, pending: Sequence[tuple[str, RunSpec]]) -> Iterator[tuple[str, RunSpec, dict]]:
        return train(list(pending), self.jobs, self.threads)

    def train_final(self, final: FinalRun) -> int:
        announce_start(final)
        announce(final, fit_final(final))
        return 0

    def note_pending(self, pending: Sequence[tuple[str, RunSpec]]) -> None:
        pass  # nothing trains here after this process


def make_launcher(args: argparse.Namespace, size: Path) -> Launcher:
    """The launcher ``--launcher`` names, with its options (checked by
    :func:`mkdseg.compare.cli.check_launcher_options`)."""
    if args.launcher == "local":
        return LocalLauncher(args.jobs or 1, args.threads)
    cpus = args.slurm_cpus or args.threads or 1
    gpus = args.slurm_gpus if args.slurm_gpus is not None else default_gpus(yaml.safe_load(size.read_text()) or {})
    resources = SlurmResources(gpus, cpus, args.slurm_partition, args.slurm_time, tuple(args.slurm_setup),
                               tuple(args.slurm_args))
    return SlurmLauncher(args.out / "slurm", resources, threads=args.threads or cpus,
                         poll_s=args.slurm_poll or SLURM_POLL_S, max_jobs=args.jobs)
