"""The ``mkdseg convert`` command line: which download, where it is, where the dataset goes, and one clear line
(naming the option or the file) for anything that stops it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mkdseg.data.convert import __doc__ as OVERVIEW
from mkdseg.data.convert.btcv import btcv_dataset
from mkdseg.data.convert.chaos import PHASES, SEQUENCES, chaos_dataset
from mkdseg.data.convert.mmwhs import MODALITIES, mmwhs_dataset
from mkdseg.data.convert.writer import log_to_stderr, write_dataset
from mkdseg.data.nifti import InputError

DATASETS = ("btcv", "chaos", "mmwhs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkdseg convert", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS, help="which public download --src holds")
    parser.add_argument("--src", required=True, type=Path,
                        help="btcv: RawData/Training (img/, label/); chaos: Train_Sets/MR (one folder per patient); "
                             "mmwhs: the folder of {ct,mr}_train_<id>_{image,label}.nii.gz files")
    parser.add_argument("--out", required=True, type=Path, help="the nnU-Net raw dataset folder to write")
    parser.add_argument("--modality", choices=tuple(MODALITIES), default="ct",
                        help="mmwhs: which modality's files to convert (default: ct)")
    parser.add_argument("--sequence", choices=tuple(SEQUENCES), default="T2SPIR", type=str.upper,
                        help="chaos: which MR sequence; each expects, below --src: "
                             + "; ".join(f"{name}{' (default)' if name == 'T2SPIR' else ''}: {layout}"
                                         for name, layout in SEQUENCES.items()))
    parser.add_argument("--phase", choices=tuple(PHASES), default=None,
                        help="chaos --sequence T1DUAL: both (default: in-phase and out-phase as channels 0000 and "
                             "0001, as nnU-Net takes them), in or out (one channel, as `mkdseg preprocess` takes them)")
    parser.add_argument("--skip-incomplete", action="store_true",
                        help="leave out cases with a part missing (image, label, phase or ground-truth slices), "
                             "naming each; without it such a case stops the conversion")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def convert_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mkdseg convert``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.phase is not None and (args.dataset != "chaos" or args.sequence != "T1DUAL"):
        parser.error("--phase is for chaos --sequence T1DUAL")
    try:
        if not args.src.exists():
            raise InputError(f"--src {args.src}: not found")
        if not args.src.is_dir():
            raise InputError(f"--src {args.src}: not a folder")
        src, out = args.src.resolve(), args.out.resolve()
        if out == src or out in src.parents:  # --overwrite would delete the download
            raise InputError(f"--out {args.out}: is or holds --src {args.src}; write the dataset elsewhere")
        if args.dataset == "btcv":
            info, cases, incomplete = btcv_dataset(args.src)
        elif args.dataset == "chaos":
            info, cases, incomplete = chaos_dataset(args.src, args.sequence, args.phase or "both")
        else:
            info, cases, incomplete = mmwhs_dataset(args.src, args.modality, log_to_stderr)
        n = write_dataset(args.out, info, cases, incomplete, overwrite=args.overwrite,
                          skip_incomplete=args.skip_incomplete)
    except InputError as e:
        print(f"mkdseg convert: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk full, a folder not writable: the file and why, not "[Errno 28] ..."
        print(f"mkdseg convert: error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    skipped = f", {len(incomplete)} incomplete skipped" if incomplete else ""
    print(f"mkdseg convert: {args.dataset} -> {args.out} ({n} cases, channels {', '.join(info.channels)}, "
          f"labels 1..{len(info.labels)}{skipped})")
    return 0
