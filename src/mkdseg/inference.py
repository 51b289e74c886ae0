"""Whole-volume prediction in the input's own geometry (``mkdseg segment``, ``mkdseg predict``).

The segmentors are trained on slices cropped around the run's structures (:mod:`mkdseg.data.preprocess`),
but a scan to segment is whole and has no label, so the structures are found first. Two passes, for
any structure set, with the slice axis and margin the checkpoint records (``model.spec``):

1. **Locate.** About one slice every ``LOCATE_STEP_MM`` = 5 mm is segmented whole: its full field of
   view, made square, resized to the model's slice size. Of each structure the largest 3D connected
   component is kept (stray false positives elsewhere drop out), and the box around all of them is the
   region of interest: one organ or seven, touching (the heart's chambers) or apart (liver, kidneys
   and spleen).
2. **Segment.** That box, grown by the training margin and made square in mm exactly as preprocessing
   crops its training slices (:func:`mkdseg.data.roi.square_box`), is segmented on every slice it spans.
   Everything outside the box is background.

If the first pass finds no foreground, the output is all background. ``crop=False`` (``--no-crop``)
runs one pass over whole slices instead, for scans that are already cropped. The first pass sees the
structures smaller than in training (whole field of view vs. crop); it only has to be roughly right,
since the box is grown by a margin, and the second pass sees training-like crops.

Precision: ``auto`` (the default) runs the network under bfloat16 autocast where the hardware does
bfloat16 natively (CUDA; CPUs with AVX512-BF16 or AMX), about twice as fast on such CPUs;
``--precision fp32`` gives the arithmetic of ``mkdseg test`` exactly.

Intensities are normalised with the same function and window rule as preprocessing
(:mod:`mkdseg.data.intensity`), over the whole canonical volume. The volume is reoriented to
canonical RAS for prediction and the label map reoriented back, so the output has the input's shape,
affine, qform/sform and orientation whatever they are. Labels are written as the target dataset's own
codes (``--codes dataset``, the default) or as class indices (``--codes index``). Probabilities exist
only one batch of slices at a time; the volume-sized arrays are the input and the uint8 label map.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import nibabel as nib
from scipy import ndimage
from tqdm.auto import tqdm

from mkdseg.data.intensity import intensity_window
from mkdseg.data.cache import VolumeRecord
from mkdseg.data.nifti import (
    Geometry,
    InputError,
    check_axcodes,
    MissingInputError,
    OutputExistsError,
    from_canonical,
    is_nifti_path,
    load_image,
    save_like,
    to_canonical,
)
from mkdseg.data.roi import (
    Box,
    bounding_ranges,
    from_slicing_view,
    network_input,
    paste_slices,
    resize_image,
    slicing_spacing,
    slicing_view,
    square_box,
    whole_slice_box,
)
from mkdseg.labels import DataSpec

LOCATE_STEP_MM = 5.0  # slice spacing of the locating pass; an organ spans several such slices
CODE_CHOICES = ("dataset", "index", "mmwhs")  # mmwhs: the name of `dataset` before label sets (MM-WHS codes)
PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


class SlicePredictor:
    """Calls a model's ``predict_proba`` on batches of slices, on a device and at a precision.

    ``predict(x [B, 1, S, S] float32 in [-1, 1]) -> probabilities [B, C, S, S] float32 on the CPU``,
    with ``S = image_size``.
    """

    def __init__(self, model: torch.nn.Module, image_size: int, device: str = "cpu", precision: str = "fp32"):
        self.model = model.to(device).eval()
        self.image_size = image_size
        self.device = torch.device(device)
        self.precision = precision

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            probs = self.model.predict_proba(x.to(self.device))
        return probs.float().cpu()


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bfloat16 where the hardware computes it natively (CUDA, CPUs with AVX512-BF16/AMX), else fp32."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def _batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def predict_box(volume: np.ndarray, window: tuple[float, float], box: Box, z: np.ndarray, predict: SlicePredictor,
                out: np.ndarray, out_z: np.ndarray, batch_size: int, bar: tqdm | None = None) -> None:
    """Segment the box's in-plane window on slices ``z`` of ``volume`` ``[X, Y, Z]`` (canonical, raw
    intensities); write the class labels into ``out[:, :, out_z]`` (``out`` uint8 ``[X, Y, *]``)."""
    for zb, ob in zip(_batches(z, batch_size), _batches(out_z, batch_size)):
        probs = predict(network_input(volume, window, box, predict.image_size, zb)[:, None])
        paste_probabilities(probs, box, out, ob)
        if bar is not None:
            bar.update(len(zb))


def paste_probabilities(probs: torch.Tensor, box: Box, out: np.ndarray, out_z: np.ndarray) -> None:
    """Resize slice probabilities ``[S, C, size, size]`` to the box's in-plane window, take the class
    with the highest, and write it into ``out[:, :, out_z]`` (the part of the box inside ``out``)."""
    # max(1).indices: the argmax, at a third of argmax(1)'s cost on [B, C, 512, 512] (torch 2.13, CPU)
    labels = resize_image(probs, box.in_plane).max(1).indices.to(torch.uint8).numpy()
    paste_slices(out, labels, box, out_z)


def locate_structures(coarse: np.ndarray, z_sampled: np.ndarray, n_slices: int) -> tuple[tuple[int, int], ...] | None:
    """Bounding ranges (x, y, z) around the largest 3D component of every structure in the coarse label
    map ``[X, Y, K]``, whose K slices are the volume's slices ``z_sampled``; the z range covers the
    unsampled gaps. ``None`` if nothing was found."""
    classes = [int(c) for c in np.unique(coarse) if c]
    if not classes:
        return None
    kept = np.zeros(coarse.shape, dtype=bool)
    for c in classes:
        kept |= largest_component(coarse == c)
    (x0, x1), (y0, y1), (k0, k1) = bounding_ranges(kept)
    gap = int(z_sampled[1] - z_sampled[0]) if len(z_sampled) > 1 else 1
    z0 = max(0, int(z_sampled[k0]) - gap + 1)
    z1 = min(n_slices, int(z_sampled[k1 - 1]) + gap)
    return (x0, x1), (y0, y1), (z0, z1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (MONAI's KeepLargestConnectedComponent
    does the same but needs scikit-image, which nothing else here needs)."""
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def segment_canonical(volume: np.ndarray, spacing: tuple[float, float, float], predict: SlicePredictor,
                      spec: DataSpec, batch_size: int = 8, crop: bool = True, progress: bool = False,
                      desc: str = "segment") -> np.ndarray:
    """Class labels ``uint8 [X, Y, Z]`` for a canonical (RAS) volume of raw intensities ``[X, Y, Z]``
    with voxel size ``spacing`` (mm, canonical axes), sliced along ``spec.slice_axis``. See the module
    docstring for the two passes."""
    view = slicing_view(volume, spec.slice_axis)
    labels = _segment_view(view, slicing_spacing(spacing, spec.slice_axis), predict, spec.margin_mm, batch_size,
                           crop, progress, desc)
    return from_slicing_view(labels, spec.slice_axis)


def _segment_view(volume: np.ndarray, spacing: tuple[float, float, float], predict: SlicePredictor, margin_mm: float,
                  batch_size: int, crop: bool, progress: bool, desc: str) -> np.ndarray:
    """:func:`segment_canonical` on a volume whose slice axis is already last."""
    shape = volume.shape
    window = intensity_window(volume)
    labels = np.zeros(shape, dtype=np.uint8)
    whole = whole_slice_box(shape, spacing)
    all_z = np.arange(shape[2])
    with tqdm(total=0, desc=desc, unit="slice", disable=not progress, leave=False) as bar:
        if not crop:
            bar.total = shape[2]
            predict_box(volume, window, whole, all_z, predict, labels, all_z, batch_size, bar)
            return labels
        step = max(1, int(round(LOCATE_STEP_MM / spacing[2])))
        sampled = all_z[step // 2::step] if shape[2] > step else all_z[shape[2] // 2:shape[2] // 2 + 1]
        coarse = np.zeros(shape[:2] + (len(sampled),), dtype=np.uint8)
        bar.total = len(sampled)
        predict_box(volume, window, whole, sampled, predict, coarse, np.arange(len(sampled)), batch_size, bar)
        found = locate_structures(coarse, sampled, shape[2])
        if found is None:
            return labels
        box = square_box(found, spacing, shape, margin_mm)
        z = np.arange(*box.z)
        bar.total += len(z)
        bar.refresh()
        predict_box(volume, window, box, z, predict, labels, z, batch_size, bar)
    return labels


def segment_file(image_path: str | Path, output_path: str | Path, predict: SlicePredictor, spec: DataSpec,
                 codes: str = "dataset", overwrite: bool = False, batch_size: int = 8, crop: bool = True,
                 progress: bool = False, orientation: str | None = None) -> Path:
    """Segment one NIfTI scan and write its label map (the target dataset's codes, int16; or class
    indices, uint8) with the input's shape, affine and header. Written atomically; an existing output
    is refused unless ``overwrite``. ``orientation``: the array's true orientation if the header's is wrong
    (as given to ``mkdseg preprocess``)."""
    if codes not in CODE_CHOICES:
        raise ValueError(f"codes must be one of {CODE_CHOICES}, got {codes!r}")
    output_path = Path(output_path)
    if not is_nifti_path(output_path):
        raise InputError(f"{output_path}: output must end in .nii or .nii.gz")
    if output_path.exists() and output_path.resolve() == Path(image_path).resolve():
        raise InputError(f"{output_path}: output would replace the input scan; choose another output path")
    if output_path.exists() and not overwrite:  # fail before the expensive part
        raise OutputExistsError(f"{output_path}: output exists; pass --overwrite to replace it")
    image, geometry = load_image(image_path)
    geometry = geometry.declared_as(orientation)
    canonical = to_canonical(image, geometry)
    classes = segment_canonical(canonical, geometry.canonical_spacing, predict, spec, batch_size, crop,
                                progress=progress, desc=Path(image_path).name)
    del image, canonical
    return save_like(output_values(from_canonical(classes, geometry), spec, codes), geometry, output_path, overwrite=overwrite)


def output_values(classes: np.ndarray, spec: DataSpec, codes: str = "dataset") -> np.ndarray:
    """Class indices as written: the target dataset's codes (``dataset``) or the indices (``index``)."""
    return classes.astype(np.uint8) if codes == "index" else spec.classes_to_codes(classes)


def write_cached_prediction(probs: torch.Tensor, record: VolumeRecord, spec: DataSpec, path: str | Path,
                            codes: str = "dataset") -> Path:
    """Write the slice probabilities ``[S, C, size, size]`` of a cached volume as a label map in the
    geometry of the scan it was preprocessed from (shape and affine from ``record``): each slice back
    to its crop box, the rest background, reoriented to the file's axes. Records without a crop box
    (the phantom) are their own original grid."""
    affine = np.asarray(record.affine if record.affine is not None else np.eye(4), dtype=np.float64)
    shape = tuple(record.original_shape) if record.original_shape else tuple(probs.shape[:1] + probs.shape[2:])
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine).header
    geometry = Geometry(Path(record.image_file), shape, affine, header).declared_as(record.extra.get("declared_orientation"))
    if record.crop_box is None:  # cached grid == original grid
        classes = probs.max(1).indices.to(torch.uint8).numpy().reshape(shape)
    else:
        view = np.zeros(slicing_view(np.empty(geometry.canonical_shape, bool), spec.slice_axis).shape, dtype=np.uint8)
        paste_probabilities(probs, Box(*(tuple(r) for r in record.crop_box)), view, np.asarray(record.slice_indices))
        classes = from_canonical(np.ascontiguousarray(from_slicing_view(view, spec.slice_axis)), geometry)
    return save_like(output_values(classes, spec, codes), geometry, path, overwrite=True)


def load_segmentor(ckpt_path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, int]:
    """Restore a checkpoint's method (:func:`mkdseg.methods.load_method`) and check it can segment:
    returns ``(model, image_size)``; raises :class:`InputError` naming the file."""
    from mkdseg.methods import load_method

    path = Path(ckpt_path)
    if not path.is_file():
        raise MissingInputError(f"{path}: checkpoint file not found")
    try:
        model = load_method(path, map_location=device)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, ImportError) as e:
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise InputError(f"cannot restore a segmentation model: {message}") from e
    kind = type(model).__name__
    if not callable(getattr(model, "predict_proba", None)):
        raise InputError(f"{path}: holds a {kind}, which has no segmentor (predict_proba); "
                         "mkdseg segment needs the checkpoint of a segmentation method")
    spec = getattr(model, "spec", None)
    if not isinstance(spec, DataSpec) or getattr(model, "num_classes", None) != spec.num_classes:
        raise InputError(f"{path}: the {kind} in it does not record which structures it segments (model.spec)")
    image_size = getattr(model, "hparams", {}).get("image_size", getattr(model, "image_size", None))
    if not isinstance(image_size, int) or image_size < 1:
        raise InputError(f"{path}: the {kind} in it does not record its slice size (hparams['image_size'])")
    return model, image_size


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def _pairs(input_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` files: one scan, or every scan of a folder (``*_label.nii*`` files skipped)."""
    if not input_path.exists():
        raise MissingInputError(f"{input_path}: input not found")
    if input_path.is_file():
        if output_path.is_dir():
            return [(input_path, output_path / input_path.name)]
        return [(input_path, output_path)]
    scans = sorted(p for p in input_path.iterdir()
                   if p.is_file() and is_nifti_path(p) and not p.name.endswith(("_label.nii.gz", "_label.nii")))
    if not scans:
        raise InputError(f"{input_path}: no .nii or .nii.gz scans in this folder")
    if output_path.exists() and not output_path.is_dir():
        raise InputError(f"{output_path}: input {input_path} is a folder, so the output must be a folder too")
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path}: output folder is the input folder; choose another to keep the scans")
    return [(p, output_path / p.name) for p in scans]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkdseg segment",
        description="Segment NIfTI scans with a trained checkpoint, its structures and its slicing. The label "
                    "map is written in exactly the input's geometry (shape, affine, orientation).",
    )
    parser.add_argument("-i", "--input", required=True, type=Path, help="a .nii/.nii.gz scan, or a folder of them")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output file, or folder for a folder input")
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by `mkdseg fit`")
    parser.add_argument("--codes", choices=CODE_CHOICES, default="dataset",
                        help="label values: the target dataset's own codes (default; 'mmwhs' is an old name for it) "
                             "or class indices 1..N")
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
        jobs = _pairs(args.input, args.output)
        existing = [str(out) for _, out in jobs if out.exists()]
        if existing and not args.overwrite:
            raise OutputExistsError(f"output exists: {', '.join(existing)}; pass --overwrite to replace")
        device = resolve_device(args.device)
        model, image_size = load_segmentor(args.ckpt, device)
        predict = SlicePredictor(model, image_size, device, resolve_precision(args.precision, device))
    except (InputError, OSError) as e:
        print(f"mkdseg segment: error: {e}", file=sys.stderr)
        return 1
    return _run_jobs(jobs, lambda src, dst: segment_file(
        src, dst, predict, model.spec, args.codes, args.overwrite, args.batch_size, not args.no_crop, not args.no_progress,
        args.orientation),
        progress=not args.no_progress and len(jobs) > 1)


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
