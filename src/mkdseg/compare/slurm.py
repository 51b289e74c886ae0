"""``mkdseg compare --launcher slurm``: each run a SLURM job, submitted with ``sbatch`` and followed with ``squeue``.

Under ``OUT/slurm/``, a job is ``jobs/<name>.sh`` (the ``--slurm-setup`` lines, then this Python, in this working
directory, on ``jobs/<name>.json``: the run or the final model to train, :mod:`mkdseg.compare.job`) and its log
``logs/<name>-<job id>.out`` (stdout and stderr); ``<name>`` is the run's folder name, ``<key>-fold<f>-seed<s>``, or
``final-<method>``. A run is finished when its ``result.json`` is there (the job writes it last, atomically); a job
that left the queue without one failed, and its log's last lines say why. ``submitted.json`` keeps each name's job id:
a later invocation waits for a job still queued or running instead of submitting its run again.

Job states come from ``squeue --states=all`` (which lists ended jobs for a few minutes, then none), never from
``sacct``, which needs the cluster's accounting database: not every cluster (nor a single-node test one) runs it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mkdseg.compare.final import FinalModel, FinalRun, announce
from mkdseg.compare.runs import RunSpec
from mkdseg.io import atomic_write_text

#: job states after which a job still runs or will run (squeue's long names); any other state, or none, has ended
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
                           "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"})
LOG_LINES = 20  # of a failed job's log, printed


@dataclass(frozen=True)
class SlurmResources:
    """What every job asks for: ``gpus`` (``--gres=gpu:N``), ``cpus`` (``--cpus-per-task``), a ``partition``, a time
    limit in ``minutes``, ``setup`` lines run before Python, and ``sbatch_args`` passed to ``sbatch`` as they are."""

    gpus: int = 0
    cpus: int = 1
    partition: str | None = None
    minutes: int | None = None
    setup: tuple[str, ...] = ()
    sbatch_args: tuple[str, ...] = ()

    def options(self) -> list[str]:
        return ["--ntasks=1", f"--cpus-per-task={self.cpus}", *([f"--gres=gpu:{self.gpus}"] if self.gpus else []),
                *([f"--partition={self.partition}"] if self.partition else []),
                *([f"--time={self.minutes}"] if self.minutes else []), *self.sbatch_args]


def missing_commands() -> list[str]:
    """The SLURM commands this launcher needs that are not on PATH."""
    return [c for c in ("sbatch", "squeue") if shutil.which(c) is None]


@dataclass(frozen=True)
class _Work:
    """One job's worth: ``payload`` (its json), ``result`` (the file the job writes last, once it succeeded)."""

    name: str
    tag: str
    payload: dict
    result: Path
    extra_error: Path | None = None  # a traceback the job may have left beside its log


class SlurmLauncher:
    """Trains each run as a SLURM job with ``resources`` and ``threads`` torch threads, at most ``max_jobs`` queued at
    once (``None``: all), polling ``squeue`` every ``poll_s`` seconds; files under ``folder`` (``OUT/slurm``)."""

    def __init__(self, folder: Path, resources: SlurmResources, threads: int, poll_s: float, max_jobs: int | None):
        self.folder = folder.resolve()
        self.resources, self.threads, self.poll_s, self.max_jobs = resources, threads, poll_s, max_jobs
        self.submitted_path = self.folder / "submitted.json"

    def train(self, pending: Sequence[tuple[str, RunSpec]]) -> Iterator[tuple[str, RunSpec, dict]]:
        specs = {}
        works = []
        for tag, spec in pending:
            name = run_name(spec)
            specs[name] = spec
            works.append(_Work(name, tag, {"run": spec.to_record(), "threads": self.threads}, spec.result_path,
                               spec.dir / "error.txt"))
        for work, outcome in self._follow(works):
            yield work.tag, specs[work.name], outcome

    def train_final(self, final: FinalRun) -> int:
        name = f"final-{final.method}"
        result = self.folder / "jobs" / f"{name}.result.json"
        work = _Work(name, f"final {final.method} model", {"final": asdict(final), "threads": self.threads,
                                                           "result": str(result)}, result)
        if self._active(self._queue_states(), name) is None:
            result.unlink(missing_ok=True)  # an earlier invocation's model: --final trains it again
        print(f"training the final {final.method} model as a job: {final.command}", flush=True)
        for _, outcome in self._follow([work]):
            if "error" in outcome:
                print(f"the final {final.method} model: FAILED, see {outcome['see']}\n{outcome['error']}", flush=True)
                return 1
            announce(final, FinalModel(**outcome))
        return 0

    def note_pending(self, pending: Sequence[tuple[str, RunSpec]]) -> None:
        """Say which unfinished runs have a job still queued or running (``--report-only`` tables without them)."""
        states = self._queue_states(required=False)
        if states is None:
            return
        active = [job for _, spec in pending
                  if (job := self._active(states, run_name(spec))) is not None]
        if active:
            print(f"{len(active)} unfinished run(s) have a job queued or running ({', '.join(active)}): the tables "
                  "leave them out; the same command without --report-only waits for them", flush=True)

    # -- following jobs ---------------------------------------------------------------------------------------------

    def _follow(self, works: list[_Work]) -> Iterator[tuple[_Work, dict]]:
        """Submit each work (or wait for its job of an earlier invocation, still queued or running) and yield
        ``(work, outcome)`` as each job ends: its result, or ``{"error", "see"}``."""
        if not works:
            return
        states = self._queue_states()
        waiting: dict[str, _Work] = {}  # job id -> its work
        to_submit = []
        for work in works:
            job = self._active(states, work.name)
            if job is None:
                to_submit.append(work)
            else:
                print(f"{work.tag}: job {job} of an earlier invocation is {states[job].state.lower()}: waiting for it "
                      f"(log {self._log(work.name, job)})", flush=True)
                waiting[job] = work
        try:
            while to_submit or waiting:
                while to_submit and (self.max_jobs is None or len(waiting) < self.max_jobs):
                    work = to_submit.pop(0)
                    if work.result.is_file():  # finished since it was planned: by a job of an earlier invocation
                        yield work, json.loads(work.result.read_text())
                        continue
                    waiting[self._submit(work)] = work
                if not waiting:
                    break
                time.sleep(self.poll_s)
                states = self._queue_states(required=False)
                if states is None:
                    continue  # squeue failed this time (a busy controller): ask again at the next poll
                for job in [job for job in waiting if job not in states or not states[job].active]:
                    work = waiting.pop(job)
                    yield work, self._outcome(work, job, states[job].state if job in states else None)
        except BaseException as stop:  # interrupted (Ctrl-C), or an error: the jobs go on without this process
            if waiting:
                jobs = " ".join(waiting)
                print(f"\nstopped waiting: job(s) {jobs} still queued or running; the same command again waits for "
                      f"them (it submits only runs without a job), `scancel {jobs}` stops them", flush=True)
            if isinstance(stop, KeyboardInterrupt):
                raise SystemExit(130) from None  # what a shell reports for Ctrl-C, without a traceback
            raise

    def _submit(self, work: _Work) -> str:
        jobs, logs = self.folder / "jobs", self.folder / "logs"
        jobs.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        payload, script = jobs / f"{work.name}.json", jobs / f"{work.name}.sh"
        atomic_write_text(payload, json.dumps(work.payload, indent=1) + "\n")
        # the same interpreter and working directory as this process: the job imports the mkdseg installed here
        command = f"exec {shlex.quote(sys.executable)} -m mkdseg.compare.job {shlex.quote(str(payload))}"
        script.write_text("\n".join(["#!/bin/bash", f"# mkdseg compare: {work.tag}", *self.resources.setup,
                                     command]) + "\n")
        argv = ["sbatch", "--parsable", f"--job-name={job_name(work.name)}", f"--output={logs / work.name}-%j.out",
                f"--chdir={os.getcwd()}", *self.resources.options(), str(script)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:  # its options are ours and the --slurm-* options': most often one of those
            raise ValueError(f"sbatch refused the job of {work.tag}: {done.stderr.strip()} (check --slurm-gpus, "
                             f"--slurm-cpus, --slurm-partition, --slurm-time, --slurm-arg); command: {shlex.join(argv)}")
        job = done.stdout.strip().split(";")[0]  # --parsable: "<id>" or "<id>;<cluster>"
        submitted = self._submitted()
        submitted[work.name] = job
        atomic_write_text(self.submitted_path, json.dumps(submitted, indent=1, sort_keys=True) + "\n")
        print(f"{work.tag}: job {job} submitted; log {self._log(work.name, job)}", flush=True)
        return job

    def _outcome(self, work: _Work, job: str, state: str | None) -> dict:
        if work.result.is_file():
            return json.loads(work.result.read_text())
        log = self._log(work.name, job)
        lines = log.read_text(errors="replace").splitlines()[-LOG_LINES:] if log.is_file() else ["(no log)"]
        ended = f"ended {state}" if state else "left the queue"
        error = (f"job {job} {ended} without writing {work.result}; the last lines of its log {log}:\n"
                 + "\n".join("    " + line for line in lines))
        if work.extra_error is not None and work.extra_error.is_file():
            error += f"\n(the run's traceback: {work.extra_error})"
        return {"error": error, "see": str(log)}

    def _log(self, name: str, job: str) -> Path:
        return self.folder / "logs" / f"{name}-{job}.out"

    def _submitted(self) -> dict[str, str]:
        if not self.submitted_path.is_file():
            return {}
        try:
            return json.loads(self.submitted_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.submitted_path}: not a record of submitted jobs ({e}); cancel the jobs it named "
                             "(squeue --me) and delete it") from e

    def _active(self, states: dict[str, QueuedJob], name: str) -> str | None:
        """The job id of ``name``'s job if it is still queued or running (by its id and its name: a cluster that
        lost its state numbers jobs from 1 again)."""
        job = self._submitted().get(name)
        queued = states.get(job)
        return job if queued is not None and queued.active and queued.name == job_name(name) else None

    def _queue_states(self, required: bool = True) -> dict[str, QueuedJob] | None:
        """This user's jobs that squeue lists, by id. A failed squeue is an error where ``required`` (before
        submitting: a job still running must not be submitted twice), else ``None``."""
        argv = ["squeue", "--noheader", f"--user={os.getuid()}", "--states=all", "--format=%i|%T|%j"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            if required:
                raise RuntimeError(f"squeue failed (exit {done.returncode}): {done.stderr.strip()}; without it, which "
                                   "runs have a job queued or running is unknown")
            print(f"squeue failed (exit {done.returncode}): {done.stderr.strip()}; asking again", flush=True)
            return None
        jobs = (line.strip().split("|", 2) for line in done.stdout.splitlines() if line.count("|") >= 2)
        return {job: QueuedJob(state, name) for job, state, name in jobs}


@dataclass(frozen=True)
class QueuedJob:
    state: str  # squeue's long name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    name: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def run_name(spec: RunSpec) -> str:
    """A run's name for its job's files: its folder's, ``<key>-fold<f>-seed<s>``."""
    return f"{spec.dir.parent.name}-{spec.dir.name}"


def job_name(name: str) -> str:
    return f"mkdseg-{name}"


def default_gpus(size_config: dict) -> int:
    """GPUs per job for a size config: its ``trainer.devices`` where it trains on a GPU, else none."""
    trainer = size_config.get("trainer") or {}
    if str(trainer.get("accelerator", "")).lower() not in ("gpu", "cuda"):
        return 0
    devices = trainer.get("devices", 1)
    return devices if isinstance(devices, int) and devices > 0 else 1
