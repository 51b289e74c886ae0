"""``mkdseg segment``: its arguments, the (scan, output) pairs of a file or folder, and the job runner."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mkdseg.data.nifti import InputError, MissingInputError, OutputExistsError, check_axcodes, is_nifti_path
from mkdseg.data.roi import CANONICAL_PLANES
from mkdseg.inference.checkpoint import load_segmentors
from mkdseg.inference.device import PRECISION_CHOICES, SlicePredictor, resolve_device, resolve_precision
from mkdseg.inference.writer import CODE_CHOICES, segment_file
from mkdseg.mirroring import Mirroring, parse_axes
from mkdseg.postprocess import class_indices, structures_to_keep


CHANNEL_SUFFIX = "_0000"  # nnU-Net's first (here: only) input channel, not part of the case's name


def output_name(scan: Path) -> str:
    """The label map's file name for ``scan``, as nnU-Net names it: the case without the ``_0000`` channel suffix.

    >>> output_name(Path("imagesTs/btcv_003_0000.nii.gz")), output_name(Path("patient7.nii"))
    ('btcv_003.nii.gz', 'patient7.nii')
    """
    ending = ".nii.gz" if scan.name.endswith(".nii.gz") else scan.suffix
    stem = scan.name[: -len(ending)]
    return (stem[: -len(CHANNEL_SUFFIX)] if stem.endswith(CHANNEL_SUFFIX) else stem) + ending


def _pairs(input_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` files: one scan, or every scan of a folder (``*_label.nii*`` files skipped), each
    written as :func:`output_name` names it into an output folder."""
    if not input_path.exists():
        raise MissingInputError(f"{input_path}: input not found")
    if input_path.is_file():
        if output_path.is_dir():
            return [(input_path, output_path / output_name(input_path))]
        return [(input_path, output_path)]
    scans = sorted(p for p in input_path.iterdir()
                   if p.is_file() and is_nifti_path(p) and not p.name.endswith(("_label.nii.gz", "_label.nii")))
    if not scans:
        raise InputError(f"{input_path}: no .nii or .nii.gz scans in this folder")
    if output_path.exists() and not output_path.is_dir():
        raise InputError(f"{output_path}: input {input_path} is a folder, so the output must be a folder too")
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path}: output folder is the input folder; choose another to keep the scans")
    pairs = [(p, output_path / output_name(p)) for p in scans]
    by_output: dict[Path, list[Path]] = {}
    for scan, out in pairs:
        by_output.setdefault(out, []).append(scan)
    clashes = [" and ".join(str(s) for s in scans) for scans in by_output.values() if len(scans) > 1]
    if clashes:
        raise InputError(f"{input_path}: {clashes[0]} would both be written as one label map; keep one of them")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkdseg segment",
        description="Segment NIfTI scans with a trained checkpoint, its structures and its slicing. The label "
                    "map is written in exactly the input's geometry (shape, affine, orientation).",
    )
    parser.add_argument("-i", "--input", required=True, type=Path, help="a .nii/.nii.gz scan, or a folder of them")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output file, or folder for a folder input")
    parser.add_argument("--ckpt", required=True, type=Path, nargs="+", metavar="CKPT",
                        help="checkpoint written by `mkdseg fit`; several (e.g. folds' or seeds'): their class "
                             "probabilities are averaged (they must segment the same structures at the same slice size)")
    parser.add_argument("--mirror", metavar="AXES", default="none",
                        help="test-time mirroring along these anatomical axes (LR, AP, SI; e.g. LR or LR,AP): each slice "
                             "is also predicted mirrored and the probabilities averaged; an LR mirror swaps the structures "
                             "named left/right (default: none)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep every connected component (default: the checkpoint's decision, made on its validation "
                             "subjects: each structure where that raised Dice is reduced to its largest component)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>.npz beside each label map: float16 class probabilities [C, *scan shape]")
    parser.add_argument("--codes", choices=CODE_CHOICES, default="dataset",
                        help="label values: the target dataset's own codes (dataset, the default), the codes of the "
                             "release it was converted from where dataset.json records them (original: MM-WHS's "
                             "205...850), or class indices 1..N (index)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: bfloat16 where the hardware supports it natively, else fp32")
    parser.add_argument("--no-crop", action="store_true", help="one pass on whole slices (scans already cropped around the structures)")
    parser.add_argument("--orientation", metavar="AXCODES",
                        help="the scans' true orientation (e.g. LAS) when their headers are wrong, as given to preprocess")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def segment_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mkdseg segment``; returns the process exit status (1 if any scan failed)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print(f"mkdseg segment: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        args.orientation = check_axcodes(args.orientation) if args.orientation else None
    except ValueError as e:
        print(f"mkdseg segment: error: --orientation: {e}", file=sys.stderr)
        return 2
    try:
        axes = parse_axes(args.mirror)
    except ValueError as e:
        print(f"mkdseg segment: error: --mirror: {e}", file=sys.stderr)
        return 2
    try:
        jobs = _pairs(args.input, args.output)
        existing = [str(out) for _, out in jobs if out.exists()]
        if existing and not args.overwrite:
            raise OutputExistsError(f"output exists: {', '.join(existing)}; pass --overwrite to replace")
        device = resolve_device(args.device)
        models, image_size = load_segmentors(args.ckpt, device)
        spec = models[0].spec
        mirroring = Mirroring.of(CANONICAL_PLANES[spec.slice_axis], axes, spec.structures) if axes else None
        predict = SlicePredictor(models, image_size, device, resolve_precision(args.precision, device), mirroring)
        keep = [] if args.no_postprocess else ensemble_decision(models)
    except (InputError, OSError) as e:
        print(f"mkdseg segment: error: {e}", file=sys.stderr)
        return 1
    if keep:
        print(f"mkdseg segment: post-processing: only the largest connected component of {', '.join(keep)} "
              "(the checkpoint's validation decision; --no-postprocess keeps all)")
    keep_classes = class_indices(spec.structures, keep)
    return _run_jobs(jobs, lambda src, dst: segment_file(
        src, dst, predict, spec, args.codes, args.overwrite, args.batch_size, not args.no_crop, not args.no_progress,
        args.orientation, keep_classes, args.save_probabilities),
        progress=not args.no_progress and len(jobs) > 1)


def ensemble_decision(models: Sequence) -> list[str]:
    """The structures whose largest connected component alone is kept: those every model's validation decision
    keeps it for, for the predictor it segments with (:mod:`mkdseg.postprocess`); none if any model has no
    decision (older checkpoints, runs without validation)."""
    kept = None
    for model in models:
        decision = getattr(model, "postprocessing", None)
        if not decision:
            return []
        names = structures_to_keep(decision, getattr(model, "primary_predictor", "seg"))
        kept = [n for n in (names if kept is None else kept) if n in names]
    return kept or []


def _run_jobs(jobs: list[tuple[Path, Path]], run: Callable[[Path, Path], Path], progress: bool) -> int:
    """Run every job; a failing scan is reported and the others still run."""
    failed = 0
    for src, dst in tqdm(jobs, desc="scans", unit="scan", disable=not progress):
        try:
            run(src, dst)
            print(f"mkdseg segment: {src} -> {dst}")
        except (InputError, OSError) as e:
            failed += 1
            print(f"mkdseg segment: error: {e}", file=sys.stderr)
    return 1 if failed else 0
