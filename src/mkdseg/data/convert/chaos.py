"""CHAOS MR (``CHAOS_Train_Sets.zip``, zenodo.org/records/3431873, CC BY-SA 4.0; cite Kavur et al. 2021).

``--src`` is ``Train_Sets/MR``: one folder per patient (``1``, ``2``, ... ``39``), each with

* ``T2SPIR/DICOM_anon/*.dcm`` and ``T2SPIR/Ground/*.png``: one PNG per slice, named as its DICOM file;
* ``T1DUAL/DICOM_anon/InPhase/*.dcm``, ``T1DUAL/DICOM_anon/OutPhase/*.dcm`` (the two echoes of one acquisition, on
  one grid) and one ``T1DUAL/Ground/*.png`` per slice, named as the slice's DICOM file of one phase (in-phase
  in the release; out-phase names are accepted too).

The PNGs' grey values are the classes (63 liver, 126 right kidney, 189 left kidney, 252 spleen; the challenge's
ranges around them). Cases are ``chaos_<id>``, the ids zero-padded to the width of the largest (``chaos_01``).
T1-DUAL gives two channels (``_0000`` in-phase, ``_0001`` out-phase; ``phase="both"``) or the one chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mkdseg.data.convert.dicom import dicom_files, read_dicom_series
from mkdseg.data.convert.writer import Case, DatasetInfo, Incomplete, Scan, check_same_grid
from mkdseg.data.nifti import InputError

#: CHAOS's grey value ranges of its MR labels (the challenge's own documentation), in the order of the class codes
CHAOS_MR_LABELS = (("liver", 55, 70), ("right kidney", 110, 135), ("left kidney", 175, 200), ("spleen", 240, 255))
#: what ``--sequence`` expects below each patient folder
SEQUENCES = {
    "T2SPIR": "<id>/T2SPIR/DICOM_anon/*.dcm with <id>/T2SPIR/Ground/*.png (one PNG per slice, named as its .dcm)",
    "T1DUAL": "<id>/T1DUAL/DICOM_anon/InPhase/*.dcm and .../OutPhase/*.dcm with one <id>/T1DUAL/Ground/*.png per slice",
}
#: ``--phase`` -> the T1-DUAL series folders, in channel order
PHASES = {"both": ("InPhase", "OutPhase"), "in": ("InPhase",), "out": ("OutPhase",)}
CHANNEL_NAMES = {"InPhase": "T1 in-phase", "OutPhase": "T1 out-phase"}
REFERENCE = "Kavur et al. 2021, CHAOS challenge (zenodo.org/records/3431873, CC BY-SA 4.0)"


def chaos_dataset(src: Path, sequence: str = "T2SPIR", phase: str = "both") -> tuple[DatasetInfo, list[Case], list[Incomplete]]:
    """The CHAOS MR download at ``src`` (``Train_Sets/MR``) as cases of one sequence.

    Args:
        src: the folder of patient folders.
        sequence: ``T2SPIR`` or ``T1DUAL`` (:data:`SEQUENCES`).
        phase: T1-DUAL only: ``both`` (two channels), ``in`` or ``out`` (:data:`PHASES`).
    """
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of {', '.join(SEQUENCES)}, got {sequence!r}")
    series = ("",) if sequence == "T2SPIR" else PHASES[phase]
    patients = _patients(src, sequence)
    width = max(len(str(int(p.name))) for p in patients)
    cases, incomplete = [], []
    for patient in patients:
        name = f"chaos_{int(patient.name):0{width}d}"
        found = _layout(patient / sequence, series)
        if isinstance(found, str):
            incomplete.append(Incomplete(name, found))
        else:
            cases.append(Case(name, _reader(*found)))
    if sequence == "T2SPIR":
        info = DatasetInfo("CHAOS abdominal MR, T2-SPIR", REFERENCE, ("MRI",), tuple(n for n, _, _ in CHAOS_MR_LABELS))
    else:
        info = DatasetInfo(f"CHAOS abdominal MR, T1-DUAL ({', '.join(CHANNEL_NAMES[s] for s in series)})", REFERENCE,
                           tuple(CHANNEL_NAMES[s] for s in series), tuple(n for n, _, _ in CHAOS_MR_LABELS))
    return info, cases, incomplete


def _patients(src: Path, sequence: str) -> list[Path]:
    patients = sorted((p for p in src.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not patients:
        hint = (f"it holds MR/: give --src {src / 'MR'}" if (src / "MR").is_dir() else
                "it is one patient's folder: give the folder above it" if (src / sequence).is_dir() else
                f"--src is CHAOS's Train_Sets/MR, holding one folder per patient ({SEQUENCES[sequence]})")
        raise InputError(f"--src {src}: no patient folders (1, 2, ...); {hint}")
    ids = [int(p.name) for p in patients]
    if len(set(ids)) < len(ids):
        twice = next(p for p in patients if ids.count(int(p.name)) > 1)
        raise InputError(f"{twice}: patient {int(twice.name)} appears twice (as {', '.join(p.name for p in patients if int(p.name) == int(twice.name))})")
    return patients


def _layout(root: Path, series: tuple[str, ...]) -> str | tuple[list[Path], Path, Path]:
    """``(the channels' series folders, the series the PNGs are named after, the Ground folder)``, or what is missing."""
    dicom = root / "DICOM_anon"
    folders = [dicom / s if s else dicom for s in series]
    ground = root / "Ground"
    for folder in [root, *folders, ground]:
        if not folder.is_dir():
            return f"{folder}: not found"
    for folder in folders:
        if not dicom_files(folder):
            return f"{folder}: no .dcm files"
    pngs = {p.stem for p in ground.glob("*.png") if not p.name.startswith(".")}
    if not pngs:
        return f"{ground}: no ground-truth .png files"
    candidates = folders if series == ("",) else [dicom / s for s in PHASES["both"] if (dicom / s).is_dir()]
    named = max(candidates, key=lambda f: len(pngs & {p.stem for p in dicom_files(f)}))  # ties: the first, in-phase
    stems = {p.stem for p in dicom_files(named)}
    if stems - pngs:
        missing = sorted(stems - pngs)
        return f"{ground / (missing[0] + '.png')}: no ground-truth PNG for {named / (missing[0] + '.dcm')} " \
               f"({len(missing)} of {len(stems)} slices lack one)"
    if pngs - stems:
        extra = sorted(pngs - stems)
        return f"{ground / (extra[0] + '.png')}: no slice {named / (extra[0] + '.dcm')} for this ground-truth PNG"
    return folders, named, ground


def _reader(folders: list[Path], named: Path, ground: Path):
    def read() -> tuple[list[Scan], Scan]:
        read_series = {}
        for folder in {*folders, named}:
            voxels, affine, files = read_dicom_series(folder)
            read_series[folder] = (Scan(voxels, affine, folder), files)
        channels = [read_series[f][0] for f in folders]
        grid, files = read_series[named]
        check_same_grid([grid, *channels])
        columns, rows = grid.values.shape[:2]
        slices = []
        for f in files:
            png = ground / f"{f.stem}.png"
            slices.append(chaos_label(png).T)  # [column, row], as the DICOM voxels
            if slices[-1].shape != (columns, rows):
                raise InputError(f"{png}: {slices[-1].shape[1]}x{slices[-1].shape[0]} pixels, its slice {f} has {rows}x{columns}")
        return channels, Scan(np.stack(slices, axis=-1), grid.affine, ground)
    return read


def chaos_label(png: Path) -> np.ndarray:
    """One CHAOS ground-truth PNG as class codes 1..4 (:data:`CHAOS_MR_LABELS`); other grey values are an error."""
    from PIL import Image

    try:
        grey = np.asarray(Image.open(png).convert("L"))
    except Exception as e:  # Pillow raises several types for broken files
        raise InputError(f"{png}: not a readable PNG ({e})") from e
    classes = np.zeros(grey.shape, np.uint8)
    for code, (_, low, high) in enumerate(CHAOS_MR_LABELS, start=1):
        classes[(grey >= low) & (grey <= high)] = code
    stray = grey[(classes == 0) & (grey > 0)]
    if stray.size:
        raise InputError(f"{png}: grey values {sorted(set(stray.tolist()))[:5]} are none of CHAOS's labels "
                         f"({', '.join(f'{n} {lo}-{hi}' for n, lo, hi in CHAOS_MR_LABELS)})")
    return classes
