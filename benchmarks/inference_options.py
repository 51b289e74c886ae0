"""What `mkdseg segment`'s options are worth on a trained run: Dice on the validation and the test subjects of its
fold, and the seconds each option costs.

    python -m benchmarks.inference_options --run benchmarks/results/compare_schedule_poly/runs/recipe-*/fold0-seed0 \
        --run benchmarks/results/compare_schedule_poly/runs/recipe-*/fold1-seed0 --out benchmarks/results/inference_options

``--run``: a run folder as ``mkdseg compare`` writes it (``config.yaml`` and ``logs/*/checkpoints/``). Its fold's
validation and test subjects come from the datamodule of its config (``data.fold``, ``n_folds``, ``n_val``,
``split_seed``), never guessed. Every subject is segmented **whole**, as ``mkdseg segment`` segments a scan
(:func:`mkdseg.inference.segment_file`, the scan from the nnU-Net dataset its cache was made from) and scored
as ``mkdseg evaluate`` scores a folder (:func:`mkdseg.evaluate.evaluate_folder`, against the scan's own label file,
in its own grid). Options (each on the run's best-validation checkpoint unless said):

- ``plain``: what ``segment`` did before these options;
- ``mirror LR``: test-time mirroring across the midline, structures named left/right swapped in the mirror image;
- ``mirror LR, no swap``: the same without the swap (what a network trained with left-right flips would want);
- ``ensemble``: the mean probabilities of the best and the last checkpoint (if they differ), and of the best
  checkpoints of every other ``--run`` of the same fold (other seeds or settings), if any (no option without);
- each of them ``+ largest component``: per structure, only the largest connected component kept where that
  raised the mean Dice on the validation subjects (decided here on this option's validation labels, as
  training decides it; so the validation number with it is chosen on itself: read its test number).

Seconds are per scan, wall and CPU of this process (``--threads`` torch threads), reading and writing included;
the machine may be shared, so the CPU time and the ratios to ``plain`` are what to compare. Written: ``results.md``
and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

from mkdseg import postprocess
from mkdseg.data import UnpairedSliceDataModule
from mkdseg.data.roi import CANONICAL_PLANES
from mkdseg.evaluate import evaluate_folder
from mkdseg.inference import SlicePredictor, load_segmentor, segment_file
from mkdseg.io import atomic_write_text
from mkdseg.metrics import summarize
from mkdseg.mirroring import Mirroring

DATA_KEYS = ("root", "target", "assistant", "n_folds", "fold", "split_seed", "n_val")
OPTIONS = ("plain", "mirror LR", "mirror LR, no swap", "ensemble")


def run_checkpoints(run: Path) -> tuple[Path, Path | None]:
    """``(best-validation checkpoint, last.ckpt or None)`` of a run folder (the newest version's)."""
    folders = sorted(run.glob("logs/*/checkpoints"), key=lambda p: p.stat().st_mtime)
    for folder in reversed(folders):
        best = sorted(folder.glob("best-step=*.ckpt"), key=lambda p: int(p.stem.split("=")[-1]))
        last = folder / "last.ckpt"
        if best or last.is_file():
            return (best[-1] if best else last), (last if last.is_file() else None)
    raise FileNotFoundError(f"{run}: no checkpoint under logs/*/checkpoints/")


def fold_subjects(config: Path) -> tuple[dict, list, list]:
    """``(data options, validation records, test records)`` of a run's config, from its datamodule."""
    data = yaml.safe_load(config.read_text())["data"]
    options = {k: data[k] for k in DATA_KEYS if data.get(k) is not None}
    module = UnpairedSliceDataModule(source="cache", **options)
    module.setup("fit")
    return options, module.val_records, module.test_records


def scan_path(record) -> Path:
    """The scan a cached volume was preprocessed from: ``imagesTr/<source_image>`` of its label file's dataset."""
    label = Path(record.extra["source_label_path"])
    return label.parent.parent / "imagesTr" / record.extra["source_image"]


def segment_subjects(records, predict, spec, out: Path, batch_size: int) -> dict:
    """Segment each record's scan whole into ``out``; ``{"wall": s, "cpu": s}`` summed over scans."""
    out.mkdir(parents=True, exist_ok=True)
    wall = cpu = 0.0
    for record in records:
        start, cpu_start = time.perf_counter(), time.process_time()
        segment_file(scan_path(record), out / f"{record.extra['source_label'].split('.nii')[0]}.nii.gz", predict, spec,
                     batch_size=batch_size, overwrite=True)
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
    return {"wall": wall, "cpu": cpu}


def keep_largest_folder(src: Path, dst: Path, spec) -> dict:
    """Every structure's largest component kept, of each label map of ``src`` into ``dst``; the seconds it took."""
    dst.mkdir(parents=True, exist_ok=True)
    wall = cpu = 0.0
    for path in sorted(src.glob("*.nii.gz")):
        image = nib.load(path)
        codes = np.asanyarray(image.dataobj)
        start, cpu_start = time.perf_counter(), time.process_time()
        kept = spec.classes_to_codes(postprocess.keep_largest(spec.codes_to_classes(codes), range(1, spec.num_classes)))
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
        nib.save(nib.Nifti1Image(kept.astype(codes.dtype), image.affine, image.header), dst / path.name)
    return {"wall": wall, "cpu": cpu}


def scores(rows: list[dict]) -> dict:
    """``{"mean": mean Dice (%), structure: mean Dice (%)}`` over the scans of ``rows``."""
    summary = summarize(rows, "dice")["prediction"]
    return {k: round(100 * v["mean"], 2) for k, v in summary.items()}


def measure_run(run: Path, partners: list[Path], work: Path, threads: int, batch_size: int) -> dict:
    """Every option on one run: Dice on its fold's validation and test subjects, seconds per scan."""
    torch.set_num_threads(threads)
    best_path, last_path = run_checkpoints(run)
    options, val, test = fold_subjects(run / "config.yaml")
    best, image_size = load_segmentor(best_path)
    spec = best.spec
    structures = dict(zip(spec.structures, spec.codes))
    labels = Path(val[0].extra["source_label_path"]).parent if val else Path(test[0].extra["source_label_path"]).parent
    plane = CANONICAL_PLANES[spec.slice_axis]
    members = [best_path]
    if last_path is not None and last_path.read_bytes() != best_path.read_bytes():
        members.append(last_path)
    members += [p for p in partners if p not in members]
    predictors = {
        "plain": SlicePredictor(best, image_size),
        "mirror LR": SlicePredictor(best, image_size, mirroring=Mirroring.of(plane, ["LR"], spec.structures)),
        "mirror LR, no swap": SlicePredictor(best, image_size,
                                             mirroring=Mirroring.of(plane, ["LR"], spec.structures, swap_lateral=False)),
    }
    if len(members) > 1:
        predictors["ensemble"] = SlicePredictor([best] + [load_segmentor(p)[0] for p in members[1:]], image_size)
    result = {"run": str(run), "fold": options.get("fold", 0), "checkpoint": best_path.name,
              "ensemble": [str(p) for p in members], "validation": [r.subject for r in val],
              "test": [r.subject for r in test], "stored_decision": best.postprocessing if hasattr(best, "postprocessing") else None,
              "options": {}}
    n_scans = len(val) + len(test)
    for name, predict in predictors.items():
        folder = work / name.replace(" ", "_").replace(",", "").replace("+", "_")
        seconds = {"wall": 0.0, "cpu": 0.0}
        rows, largest = {}, {}
        for subset, records in (("val", val), ("test", test)):
            spent = segment_subjects(records, predict, spec, folder / subset, batch_size)
            seconds = {k: seconds[k] + spent[k] for k in seconds}
            pp_spent = keep_largest_folder(folder / subset, folder / f"{subset}_largest", spec)
            rows[subset] = evaluate_folder(folder / subset, labels, structures, with_assd=False)
            largest[subset] = evaluate_folder(folder / f"{subset}_largest", labels, structures, with_assd=False)
            largest.setdefault("seconds", {"wall": 0.0, "cpu": 0.0})
            largest["seconds"] = {k: largest["seconds"][k] + pp_spent[k] for k in seconds}
        keep = postprocess.decide(rows["val"], largest["val"]).get("prediction", [])
        entry = {"val": scores(rows["val"]), "test": scores(rows["test"]), "keep_largest": keep,
                 "val_pp": scores(postprocess.apply_decision(rows["val"], largest["val"], {"prediction": keep})),
                 "test_pp": scores(postprocess.apply_decision(rows["test"], largest["test"], {"prediction": keep})),
                 "wall_s_per_scan": round(seconds["wall"] / n_scans, 2), "cpu_s_per_scan": round(seconds["cpu"] / n_scans, 2),
                 "pp_cpu_s_per_scan": round(largest["seconds"]["cpu"] / n_scans, 2)}
        result["options"][name] = entry
        print(f"{run.name} {name}: val {entry['val']['mean']} (+pp {entry['val_pp']['mean']}), test {entry['test']['mean']} "
              f"(+pp {entry['test_pp']['mean']}), {entry['cpu_s_per_scan']} CPU s/scan", flush=True)
    return result


def report(results: list[dict]) -> str:
    """The table: per option, mean over runs of the mean Dice on validation and test, without and with the
    post-processing validation chose, and the seconds per scan."""
    lines = ["| option | validation Dice | + largest component | test Dice | + largest component | CPU s/scan | × plain "
             "| largest component CPU s/scan |", "|---|---|---|---|---|---|---|---|"]
    base_cpu = statistics.mean(r["options"]["plain"]["cpu_s_per_scan"] for r in results)
    names = [n for n in OPTIONS if all(n in r["options"] for r in results)]
    for name in names:
        entries = [r["options"][name] for r in results]
        mean = lambda key: statistics.mean(e[key]["mean"] for e in entries)  # noqa: E731
        cpu = statistics.mean(e["cpu_s_per_scan"] for e in entries)
        pp_cpu = statistics.mean(e["pp_cpu_s_per_scan"] for e in entries)
        lines.append(f"| {name} | {mean('val'):.2f} | {mean('val_pp'):.2f} | {mean('test'):.2f} | {mean('test_pp'):.2f} | "
                     f"{cpu:.2f} | {cpu / base_cpu:.2f} | {pp_cpu:.2f} |")
    lines += ["", "Per run (fold): structures validation kept the largest component of, with the plain option; per structure "
              "test Dice (plain -> + largest component):", ""]
    for r in results:
        plain = r["options"]["plain"]
        per = ", ".join(f"{s} {plain['test'][s]:.2f} -> {plain['test_pp'][s]:.2f}" for s in plain["test"] if s != "mean")
        lines.append(f"- {Path(r['run']).parent.name}/{Path(r['run']).name} (fold {r['fold']}, {len(r['validation'])} "
                     f"validation, {len(r['test'])} test scans, {r['checkpoint']}; ensemble: "
                     f"{' + '.join(_short(p) for p in r['ensemble'])}): "
                     f"keep largest of {plain['keep_largest'] or 'none'}; {per}")
    return "\n".join(lines) + "\n"


def _short(path: str) -> str:
    """``<study>/<run>/<checkpoint>`` of a checkpoint path, what tells ensemble members apart."""
    parts = Path(path).parts
    study = next((parts[i - 1] for i in range(1, len(parts)) if parts[i] == "runs"), "")
    return "/".join(p for p in (study, parts[-5] if len(parts) >= 5 else "", parts[-1]) if p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run folder (config.yaml, logs/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md and results.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (segment's default 8)")
    parser.add_argument("--work", type=Path, help="folder for the label maps (default: a temporary one)")
    args = parser.parse_args(argv)
    folds = {run: fold_of(run) for run in args.run}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for i, run in enumerate(args.run):
            partners = [run_checkpoints(other)[0] for other in args.run if other != run and folds[other] == folds[run]]
            results.append(measure_run(run, partners, work / f"run{i}", args.threads, args.batch_size))
    command = "python -m benchmarks.inference_options " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"# Inference options ({len(results)} run(s))\n\nCommand: `{command}`\n\n" + report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.md", text)
    atomic_write_text(args.out / "results.json", json.dumps({"threads": args.threads, "results": results}, indent=1))
    print(text)
    return 0


def fold_of(run: Path) -> int:
    return int(yaml.safe_load((run / "config.yaml").read_text())["data"].get("fold", 0))


if __name__ == "__main__":
    sys.exit(main())
