"""`mkdseg compare --launcher slurm` against a real single-node SLURM (.ci/start_slurm.sh starts one; it needs root
and apt): each run a job, a failed job reported with its log, a rerun submitting only the runs without a job, and the
same numbers as the same runs trained here. MKDSEG_SKIP_SLURM_TESTS=1 skips the tests that need SLURM."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mkdseg.compare.cli import compare_main
from mkdseg.compare.slurm import SlurmResources

from test_compare_cli import phantom_cache, tiny_size  # noqa: F401 - fixtures: the 8-subject phantom, tiny networks

REPO = Path(__file__).resolve().parents[1]
SKIP_VARIABLE = "MKDSEG_SKIP_SLURM_TESTS"
# runs.csv columns that the arithmetic decides (not the clock, nor the folder)
METRICS = ("method", "fold", "seed", "predictor", "mean_dice", "val_dice", "val_step", "val_curve", "mean_dice_last",
           "global_step")


@pytest.fixture(scope="session")
def slurm() -> None:
    """A single-node SLURM taking jobs: started (installed first, if need be) by .ci/start_slurm.sh."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1 asks to skip the SLURM tests")
    if os.geteuid() != 0:
        pytest.fail(f"the SLURM tests start a single-node SLURM with .ci/start_slurm.sh, which needs root: run them as "
                    f"root, or set {SKIP_VARIABLE}=1 to skip them")
    done = subprocess.run([str(REPO / ".ci" / "start_slurm.sh")], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f".ci/start_slurm.sh could not start SLURM (exit {done.returncode}): {done.stderr.strip()} "
                    f"(set {SKIP_VARIABLE}=1 to skip the SLURM tests)")


def test_each_run_is_a_job_with_the_resources_asked_for():
    resources = SlurmResources(gpus=2, cpus=4, partition="gpu", minutes=90, sbatch_args=("--account=lab",))
    assert resources.options() == ["--ntasks=1", "--cpus-per-task=4", "--gres=gpu:2", "--partition=gpu", "--time=90",
                                   "--account=lab"]
    assert SlurmResources().options() == ["--ntasks=1", "--cpus-per-task=1"]  # the cluster's defaults for the rest


def test_without_slurm_commands_the_slurm_launcher_is_refused_by_name(phantom_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no squeue
    with pytest.raises(SystemExit) as exit_info:
        compare_main(["--cache", str(phantom_cache), "--out", str(tmp_path / "cmp"), "--launcher", "slurm"])
    assert exit_info.value.code == 2
    assert "--launcher slurm: sbatch and squeue not found on PATH" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_minutes_are_not_measured_here_for_runs_trained_on_the_cluster(slurm, phantom_cache, tiny_size, tmp_path,
                                                                       capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_main(["--cache", str(phantom_cache), "--size", str(tiny_size), "--methods", "joint", "--minutes", "1",
                      "--out", str(tmp_path / "cmp"), "--launcher", "slurm"])
    assert exit_info.value.code == 2 and "--minutes: no measured cost per iteration of joint-" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_compare_through_slurm_resumes_and_tables_what_local_runs_table(slurm, phantom_cache, tiny_size, tmp_path,
                                                                         capsys):
    common = ["--cache", str(phantom_cache), "--methods", "joint", "recipe", "--n-target", "1", "--folds", "2",
              "--seeds", "1", "--size", str(tiny_size), "--steps", "2", "--threads", "1"]
    out = tmp_path / "slurm"
    on_slurm = [*common, "--out", str(out), "--launcher", "slurm", "--slurm-poll", "0.5", "--slurm-time", "5"]
    submitted_path = out / "slurm" / "submitted.json"

    # 1. four jobs, one cancelled (`scancel`, by the first job to run its setup line, on itself): the others finish; the
    # cancelled run is reported with its log
    fail_once = (f"if mkdir {tmp_path / 'failed_once'} 2>/dev/null; then echo 'cancelled once on purpose' >&2; "
                 "scancel $SLURM_JOB_ID; sleep 60; fi")
    assert compare_main([*on_slurm, "--slurm-setup", fail_once]) == 1
    printed = capsys.readouterr().out
    first = json.loads(submitted_path.read_text())
    runs = {name: out / "runs" / name.rsplit("-fold", 1)[0] / ("fold" + name.rsplit("-fold", 1)[1]) for name in first}
    failed = [name for name, run in runs.items() if not (run / "result.json").is_file()]
    assert len(first) == 4 and len(failed) == 1, (first, failed)
    failed = failed[0]
    log = out / "slurm" / "logs" / f"{failed}-{first[failed]}.out"
    assert f"FAILED, see {log}" in printed and "ended CANCELLED" in printed and "cancelled once on purpose" in printed
    job = subprocess.run(["scontrol", "show", "job", first[failed]], capture_output=True, text=True).stdout
    assert "TimeLimit=00:05:00" in job and f"WorkDir={os.getcwd()}" in job and f"StdOut={log}" in job
    script = (out / "slurm" / "jobs" / f"{failed}.sh").read_text()
    assert f"exec {sys.executable} -m mkdseg.compare.job" in script  # this interpreter, this installation

    # --report-only tables the finished runs and submits nothing
    assert compare_main([*on_slurm, "--report-only"]) == 0
    assert len(list(csv.DictReader((out / "n1" / "runs.csv").open()))) == 3
    assert json.loads(submitted_path.read_text()) == first

    # 2. again, interrupted (Ctrl-C: SIGINT to this process) once it has submitted the failed run: only that one gets
    # a new job
    returned = threading.Event()

    def interrupt_once_resubmitted() -> None:
        while not returned.is_set():
            if json.loads(submitted_path.read_text())[failed] != first[failed]:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=interrupt_once_resubmitted)
    watcher.start()
    try:
        with pytest.raises(SystemExit) as stopped:  # its job sleeps first: still running when the rerun below starts
            compare_main([*on_slurm, "--slurm-setup", "sleep 3"])
    finally:
        returned.set()  # no signal once it has returned, whatever happened
        watcher.join()
    rerun_printed = capsys.readouterr().out
    second = json.loads(submitted_path.read_text())
    assert stopped.value.code == 130, rerun_printed
    assert "3 finished before, 1 to train" in rerun_printed and "stopped waiting" in rerun_printed
    assert second[failed] != first[failed] and {n: j for n, j in second.items() if n != failed} == {
        n: j for n, j in first.items() if n != failed}
    # while its job trains on the cluster, the same runs here (one process, one thread), for the numbers
    assert compare_main([*common, "--out", str(tmp_path / "local")]) == 0

    # 3. again: it waits for the job the interrupted invocation left (never a second one), then the final model's job
    capsys.readouterr()
    assert compare_main([*on_slurm, "--final"]) == 0
    printed = capsys.readouterr().out
    third = json.loads(submitted_path.read_text())
    assert third[failed] == second[failed]
    assert f"job {second[failed]} of an earlier invocation" in printed or "4 finished before" in printed
    final = [name for name in third if name.startswith("final-")]
    assert len(final) == 1 and "segment scans with it: mkdseg segment --ckpt" in printed
    assert list((out / "final").rglob("best-step=*.ckpt"))

    def metrics(folder: Path) -> list[dict]:
        return [{k: row[k] for k in METRICS} for row in csv.DictReader((folder / "n1" / "runs.csv").open())]

    here, there = metrics(tmp_path / "local"), metrics(out)
    assert len(here) == 4 and here == there  # same seeds, one thread each: the same numbers, wherever trained
