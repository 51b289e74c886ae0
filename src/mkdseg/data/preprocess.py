"""The ``mkdseg preprocess`` verb: two nnU-Net v2 raw datasets -> one slice cache.

``--target DIR --assistant DIR``: one nnU-Net dataset per modality (:mod:`mkdseg.data.nnunet`; a public download
becomes one with ``mkdseg convert``). The structures are those both ``dataset.json`` files name (or exactly
``--structures``), in the target's code order, with each dataset's codes (and the original codes a dataset
recorded, e.g. MM-WHS's); slices are cut perpendicular to the coarsest axis of the target's median spacing
(``--slice-axis`` overrides) in both, so both modalities show the same plane.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mkdseg.data.cache import SliceCache
from mkdseg.data.nifti import InputError, check_axcodes, load_geometry
from mkdseg.data.nnunet import match_structures, parse_structure_list, read_raw_dataset
from mkdseg.data.pipeline import UNKNOWN_LABEL_CHOICES, ScanPair, write_cache
from mkdseg.data.roi import coarsest_axis, parse_slice_axis
from mkdseg.labels import DEFAULT_MARGIN_MM, FIELDS_OF_VIEW, SLICE_AXIS_NAMES, Structure

CACHE_SOURCE = "nnunet"


def preprocess_nnunet(target: str | Path, assistant: str | Path | None, out: str | Path, *,
                      structures: Sequence[str] | None = None, slice_axis: int | None = None,
                      target_modality: str | None = None, assistant_modality: str | None = None,
                      target_orientation: str | None = None, assistant_orientation: str | None = None,
                      image_size: int = 256, margin_mm: float = DEFAULT_MARGIN_MM, unknown_labels: str = "error",
                      field_of_view: str = "body", max_cases: int | None = None, overwrite: bool = False,
                      progress: bool = True) -> SliceCache:
    """Preprocess two nnU-Net raw datasets (``assistant=None``: the target alone) into one cache.

    ``slice_axis``: canonical RAS axis (0 sagittal, 1 coronal, 2 transverse); ``None`` = the coarsest
    axis of the target's median spacing. ``max_cases``: only the first ``n`` cases of each dataset
    (quick looks and tests). ``target_orientation``/``assistant_orientation``: a dataset's true array
    orientation (e.g. ``"LAS"``) where its headers are wrong; the default trusts the headers.
    """
    orientation_of = [check_axcodes(o) if o else None for o in (target_orientation, assistant_orientation)]
    datasets = [read_raw_dataset(target, target_modality)]
    if assistant is not None:
        datasets.append(read_raw_dataset(assistant, assistant_modality))
        if datasets[0].modality == datasets[1].modality:
            raise InputError(
                f"{datasets[0].root} and {datasets[1].root}: both datasets are modality {datasets[0].modality!r} "
                "(channel_names); name them apart with --target-modality / --assistant-modality (once: the cache "
                "records which is the target and which the assistant, so training needs no names)"
            )
    names = match_structures(datasets[0], datasets[-1], structures)  # alone (no assistant): the target's own labels
    run_structures = [Structure(name, {d.modality: d.code_of(name) for d in datasets},
                                {d.modality: d.original_code_of(name) for d in datasets if d.original_code_of(name)})
                      for name in names]
    cases = {d.modality: list(d.cases[:max_cases] if max_cases else d.cases) for d in datasets}
    orientations = {d.modality: o for d, o in zip(datasets, orientation_of)}
    if slice_axis is None:
        slice_axis = coarsest_axis(_median_spacing(cases[datasets[0].modality], orientations[datasets[0].modality]))
    pairs = [ScanPair(d.modality, c.case_id, c.image, c.label) for d in datasets for c in cases[d.modality]]
    roles = {"target": datasets[0].modality, **({"assistant": datasets[1].modality} if assistant is not None else {})}
    return write_cache(pairs, out, source=CACHE_SOURCE, structures=run_structures, roles=roles,
                       declared={d.modality: sorted(d.declared_codes) for d in datasets}, slice_axis=slice_axis,
                       image_size=image_size, margin_mm=margin_mm, unknown_labels=unknown_labels,
                       orientations=orientations, field_of_view=field_of_view, overwrite=overwrite, progress=progress)


def _median_spacing(cases, orientation: str | None = None) -> tuple[float, float, float]:
    """Median canonical voxel spacing over the cases (headers only)."""
    spacings = np.array([load_geometry(c.image).declared_as(orientation).canonical_spacing for c in cases])
    return tuple(float(s) for s in np.median(spacings, axis=0))  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkdseg preprocess",
        description="Turn labelled NIfTI scans into mkdseg's slice cache (canonical RAS, every slice cut to the "
                    "body, intensities in [-1, 1]): two nnU-Net v2 raw datasets (--target DIR --assistant DIR). "
                    "`mkdseg convert` makes them from the public downloads (BTCV, CHAOS, MM-WHS).",
    )
    parser.add_argument("--out", required=True, type=Path, help="cache folder to create or complete")
    parser.add_argument("--target", help="nnU-Net raw dataset folder of the target modality")
    parser.add_argument("--assistant", help="nnU-Net raw dataset folder of the assistant modality, or 'none'")
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)  # gone: says what replaces it
    parser.add_argument("--structures", help='comma-separated structure names to segment, in class order, e.g. '
                                             '"liver,right kidney"; default: every label both datasets name')
    parser.add_argument("--slice-axis", default="auto",
                        help=f"auto (the coarsest-spacing axis), {', '.join(SLICE_AXIS_NAMES)} (default: auto)")
    parser.add_argument("--target-modality", help="modality name of the target dataset (default: its channel_names)")
    parser.add_argument("--assistant-modality", help="modality name of the assistant dataset (default: its channel_names)")
    for role in ("target", "assistant"):
        parser.add_argument(f"--{role}-orientation", metavar="AXCODES",
                            help=f"the {role} arrays' true orientation (e.g. LAS) when the dataset's headers are wrong; "
                                 "default: trust the headers")
    parser.add_argument("--image-size", type=int, default=256, help="slice size after resizing (default: 256, the paper's); `mkdseg fit` takes the cache's size "
                             "unless data.image_size is set; on a CPU, 64 (the phantom demo's) trains far faster")
    parser.add_argument("--field-of-view", choices=FIELDS_OF_VIEW, default="body",
                        help="body (default): every slice, cut to the body's intensity box, as `mkdseg segment` cuts a "
                             "scan without a label; structures: the labelled structures' box and the slices around "
                             "them (the papers' protocol: its test scores used the labels to find the organs)")
    parser.add_argument("--margin-mm", type=float, default=DEFAULT_MARGIN_MM,
                        help=f"with --field-of-view structures: context around the structures' box in mm (default: {DEFAULT_MARGIN_MM})")
    parser.add_argument("--max-cases", type=int, help="only the first N cases of each dataset")
    parser.add_argument("--unknown-labels", choices=UNKNOWN_LABEL_CHOICES, default="error",
                        help="label values the dataset does not declare: stop with an error, or map to background")
    parser.add_argument("--overwrite", action="store_true", help="rebuild the cache (swapped in only when complete)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mkdseg preprocess``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cache = _run(args, parser)
    except (InputError, ValueError, OSError) as e:
        print(f"mkdseg preprocess: error: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{len(cache.volumes(m))} {m}" for m in cache.modalities)
    size = cache.image_size
    roles = ", ".join(f"{role} {name}" for role, name in cache.roles.items())
    print(f"mkdseg preprocess: {counts} volumes of {', '.join(cache.structure_names)} "
          f"({SLICE_AXIS_NAMES[cache.slice_axis]} slices, {size}x{size} px; {roles}) in {cache.root}")
    # the cache records its roles and slice size: training needs neither the modality names nor the size
    print(f"train on it: mkdseg fit --config configs/demo.yaml --data.source=cache --data.root={cache.root}")
    return 0


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SliceCache:
    none = lambda v: None if v is None or v.lower() == "none" else v  # noqa: E731
    common = dict(image_size=args.image_size, margin_mm=args.margin_mm, unknown_labels=args.unknown_labels,
                  field_of_view=args.field_of_view, overwrite=args.overwrite, progress=not args.no_progress)
    if args.src is not None:
        parser.error(f"--src {args.src}: preprocess reads nnU-Net datasets; convert MM-WHS first: mkdseg convert mmwhs "
                     "--src DIR --modality ct --out CT_DIR (and --modality mr), then --target CT_DIR --assistant MR_DIR")
    if not args.target:
        parser.error("give --target DIR (and --assistant DIR): nnU-Net raw datasets (`mkdseg convert` makes them)")
    structures = parse_structure_list(args.structures) if args.structures else None
    return preprocess_nnunet(args.target, none(args.assistant), args.out, structures=structures,
                             slice_axis=parse_slice_axis(args.slice_axis), target_modality=args.target_modality,
                             assistant_modality=args.assistant_modality, target_orientation=args.target_orientation,
                             assistant_orientation=args.assistant_orientation, max_cases=args.max_cases, **common)
