"""How much a label that finds the organs flatters a model: each run's tested weights scored twice on its
held-out scans, both in the scan's own grid against its own label file.

    python -m benchmarks.located_score --study benchmarks/results/compare_whole_scan --located data_cache/abdomen128_located \
        --out benchmarks/results/located_score

- **whole scan** (what a user gets, the study's own number): the scan cut without a label, every slice (the
  study's cache, ``--field-of-view body``);
- **organs located from the label** (the papers' protocol): the same weights on the same scan cut to its labelled
  structures' box and slices (``--located``, a cache made by ``mkdseg preprocess --field-of-view structures`` at
  the study's slice size); everything outside that box counts as background.

Per run: both means, and the scan with the largest gap (located minus whole). Written: ``runs.csv`` (one row per
run and scan) and ``results.md`` (per method: means over runs, the largest gap of any scan). Runs whose best
checkpoint is no longer on disk (committed studies keep none) are skipped and counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from mkdseg.data.cache import SliceCache
from mkdseg.methods import load_method
from mkdseg.metrics import volume_scores


def scan_dice(model, cache: SliceCache, subject: str) -> float:
    """Mean Dice over the structures of one target scan of ``cache``, scored in the scan's own grid."""
    record = next(r for r in cache.volumes(model.spec.modality) if r.subject == subject)
    image, _ = cache.load(record)
    with model.evaluating():
        predictions = model.predict_in_scan(torch.from_numpy(np.array(image))[:, None], record)
    truth, spacing = model.scan_label(record)
    scores = volume_scores(predictions[model.primary_predictor], truth, model.spec.structures, spacing)
    return float(np.nanmean([s["dice"] for s in scores.values()]))


def study_runs(study: Path):
    """``(result, best checkpoint or None, whole-scan cache)`` of every finished run of a compare study."""
    for path in sorted(study.glob("runs/*/*/result.json")):
        result = json.loads(path.read_text())
        found = sorted(path.parent.glob(f"logs/*/checkpoints/{result.get('best_checkpoint', 'last.ckpt')}"))
        root = yaml.safe_load((path.parent / "config.yaml").read_text())["data"]["root"]
        yield result, (found[0] if found else None), Path(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, type=Path, help="a `mkdseg compare --out` folder")
    parser.add_argument("--located", required=True, type=Path, help="cache of the same scans, --field-of-view structures")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    located = SliceCache(args.located)
    if located.field_of_view != "structures":
        parser.error(f"--located {args.located}: a cache made with --field-of-view structures, not {located.field_of_view!r}")
    rows, skipped = [], 0
    for result, ckpt, whole_root in study_runs(args.study):
        if ckpt is None:
            skipped += 1
            continue
        model = load_method(ckpt)
        whole = SliceCache(whole_root)
        test = json.loads((whole_root / f"splits_{model.spec.modality}_2fold.json").read_text())["folds"][result["fold"]]
        for subject in test:
            rows.append({"method": result["config"], "fold": result["fold"], "seed": result["seed"], "subject": subject,
                         "whole": scan_dice(model, whole, subject), "located": scan_dice(model, located, subject)})
        print(f"{result['config']} fold {result['fold']} seed {result['seed']}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["method", "fold", "seed", "subject", "whole", "located"])
        writer.writeheader()
        writer.writerows({**r, "whole": f"{r['whole']:.4f}", "located": f"{r['located']:.4f}"} for r in rows)
    lines = [f"# Whole scan against organs located from the label ({args.study})", "",
             f"`python -m benchmarks.located_score {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| Method | runs | whole scan | organs located from the label | gap | largest gap of a scan |",
             "|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        per_run: dict[tuple, list[dict]] = {}
        for r in mine:
            per_run.setdefault((r["fold"], r["seed"]), []).append(r)
        whole = statistics.mean(statistics.mean(r["whole"] for r in v) for v in per_run.values())
        loc = statistics.mean(statistics.mean(r["located"] for r in v) for v in per_run.values())
        worst = max(mine, key=lambda r: r["located"] - r["whole"])
        lines.append(f"| {method} | {len(per_run)} | {100 * whole:.2f} | {100 * loc:.2f} | {100 * (loc - whole):+.2f} | "
                     f"{100 * (worst['located'] - worst['whole']):+.2f} ({worst['subject']}, fold {worst['fold']} seed {worst['seed']}) |")
    if skipped:
        lines += ["", f"{skipped} run(s) skipped: their checkpoint is no longer on disk."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
