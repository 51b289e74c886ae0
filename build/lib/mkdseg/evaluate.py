"""``mkdseg evaluate``: score a folder of label maps against a folder of label files, as a user's scans are scored.

What nnU-Net's ``nnUNetv2_evaluate_folder`` does, for mkdseg's users: each prediction is paired with the label
file of its case (``<case>.nii.gz``; a ``_0000`` channel suffix on the prediction is ignored), both read in
their own grid (the same shape and affine, or an error naming both files), and scored per structure: Dice,
and ASSD in mm of that grid. Structures are named by a ``dataset.json`` (the label folder's dataset, by
default) and found by their codes; ``--structures`` keeps some of them. Written: ``summary.json`` (per
structure and mean: mean, std and count over scans; the worst scan) and ``per_case.csv``.

    mkdseg evaluate --pred segs/ --labels Dataset/labelsTr --structures "liver,spleen"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mkdseg.data.nifti import NIFTI_SUFFIXES, InputError, MissingInputError, load_geometry, load_label
from mkdseg.data.nnunet import normalise_name, parse_structure_list, read_label_names
from mkdseg.labels import DataSpec
from mkdseg.metrics import format_table, summarize, volume_scores, worst_volumes
from mkdseg.callbacks import write_reports

PREDICTOR = "prediction"


def case_id(path: Path) -> str:
    """The case a NIfTI file is of: its name without the ending and without nnU-Net's ``_0000`` channel suffix.

    >>> case_id(Path("btcv_003_0000.nii.gz")), case_id(Path("btcv_003.nii"))
    ('btcv_003', 'btcv_003')
    """
    name = next((path.name[: -len(e)] for e in NIFTI_SUFFIXES if path.name.endswith(e)), path.stem)
    return name.removesuffix("_0000")


def nifti_files(folder: Path, what: str) -> dict[str, Path]:
    """``{case id: file}`` of the NIfTI files in ``folder``; an error naming the folder if there are none."""
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: {what} folder not found")
    files = {case_id(p): p for p in sorted(folder.iterdir())
             if p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")}  # not a file being written
    if not files:
        raise InputError(f"{folder}: no .nii or .nii.gz {what} files in this folder")
    return files


def structures_to_score(labels: dict[str, int], wanted: Sequence[str] | None, source: Path) -> dict[str, int]:
    """The (name -> code) labels to score: all of ``labels``, or the ``wanted`` ones by name, in that order."""
    if not wanted:
        return dict(labels)
    by_key = {normalise_name(name): (name, code) for name, code in labels.items()}
    missing = [w for w in wanted if normalise_name(w) not in by_key]
    if missing:
        raise InputError(f"{source}: no label {missing[0]!r}; it has {', '.join(labels)}")
    return dict(by_key[normalise_name(w)] for w in wanted)


def evaluate_folder(pred_dir: Path, labels_dir: Path, structures: dict[str, int], with_assd: bool = True) -> list[dict]:
    """One row per (prediction, structure): ``{"predictor", "subject", "structure", "dice"[, "assd"]}``."""
    predictions = nifti_files(pred_dir, "prediction")
    truths = nifti_files(labels_dir, "label")
    spec = DataSpec(tuple(structures), tuple(structures.values()))
    rows = []
    for case, pred_path in predictions.items():
        if case not in truths:
            raise MissingInputError(f"{pred_path}: no label file of case {case!r} in {labels_dir}")
        geometry = load_geometry(truths[case], "label")
        truth = spec.codes_to_classes(load_label(truths[case], like=geometry))
        try:
            predicted = load_label(pred_path, like=geometry)
        except InputError as e:
            raise InputError(f"{pred_path} does not lie on the grid of its label file {truths[case]}: {e}") from e
        scores = volume_scores(spec.codes_to_classes(predicted), truth, spec.structures, geometry.spacing, with_assd)
        rows += [{"predictor": PREDICTOR, "subject": case, "structure": name, **values} for name, values in scores.items()]
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkdseg evaluate",
        description="Score label maps against label files, per scan and structure (Dice, ASSD in mm), in each "
                    "scan's own grid, as nnU-Net scores a folder; writes summary.json and per_case.csv.")
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps (e.g. mkdseg segment's)")
    parser.add_argument("--labels", required=True, type=Path, help="folder of label files, <case>.nii.gz (e.g. labelsTr)")
    parser.add_argument("--dataset-json", type=Path,
                        help="dataset.json naming the labels' codes (default: the one beside the label folder)")
    parser.add_argument("--structures", help='comma-separated structure names to score (default: every label it names)')
    parser.add_argument("--out", type=Path, help="folder for summary.json and per_case.csv (default: --pred)")
    parser.add_argument("--no-assd", action="store_true", help="Dice only (surface distances take longer)")
    return parser


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mkdseg evaluate``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    dataset_json = args.dataset_json or args.labels.parent / "dataset.json"
    try:
        wanted = parse_structure_list(args.structures) if args.structures else None
        structures = structures_to_score(read_label_names(dataset_json), wanted, dataset_json)
        rows = evaluate_folder(args.pred, args.labels, structures, with_assd=not args.no_assd)
    except (InputError, ValueError, OSError) as e:
        print(f"mkdseg evaluate: error: {e}", file=sys.stderr)
        return 1
    result = {"rows": rows, "dice": summarize(rows, "dice")}
    if not args.no_assd:
        result["assd"] = summarize([r for r in rows if "assd" in r], "assd")
    out = args.out or args.pred
    write_reports(result, out)
    print(f"Dice (%) over {len({r['subject'] for r in rows})} scans, mean ± std:\n{format_table(result['dice'])}")
    for worst in worst_volumes(rows).values():
        print(f"worst scan: {worst['subject']} ({100 * worst['dice']:.2f})")
    print(f"mkdseg evaluate: wrote {out / 'summary.json'} and {out / 'per_case.csv'}")
    return 0
