"""One SLURM job of ``mkdseg compare --launcher slurm`` (:mod:`mkdseg.compare.slurm`), on the node it was given::

    python -m mkdseg.compare.job OUT/slurm/jobs/<name>.json

trains what the json describes: ``{"run": a RunSpec's record, "threads": N}`` (the run's ``result.json``, or its
``error.txt`` and exit status 1), or ``{"final": a FinalRun, "threads": N, "result": path}`` (the final model; its
checkpoint written to ``result``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from mkdseg.compare.final import FinalRun, announce, announce_start, fit_final
from mkdseg.compare.runs import RunSpec, recorded, run_with_threads
from mkdseg.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mkdseg.compare.job JOB.json (written by mkdseg compare --launcher slurm)",
              file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    if "run" in job:
        spec = RunSpec.from_record(job["run"])
        print(f"training {spec.key} fold {spec.fold} seed {spec.seed} ({spec.max_steps} iterations, "
              f"{job['threads']} thread(s)) in {spec.dir}", flush=True)
        result = recorded(spec, run_with_threads(spec, job["threads"]))
        if "error" in result:
            print(result["error"], file=sys.stderr, flush=True)
            return 1
        primary = result["primary_predictor"]
        print(f"finished: validation-picked weights' test Dice {100 * result['dice'][primary]['mean']:.2f}, "
              f"{spec.result_path}", flush=True)
        return 0
    final = FinalRun(job["final"]["method"], tuple(job["final"]["args"]))
    torch.set_num_threads(job["threads"])
    announce_start(final)
    model = fit_final(final)
    atomic_write_text(Path(job["result"]), json.dumps(asdict(model)) + "\n")
    announce(final, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
