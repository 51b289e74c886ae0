"""Which checkpoints can segment: restore a method and check it records what inference needs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mkdseg.data.nifti import InputError, MissingInputError
from mkdseg.labels import DataSpec
from mkdseg.methods import loading


def load_segmentor(ckpt_path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, int]:
    """Restore a checkpoint's method (:func:`mkdseg.methods.load_method`) and check it can segment:
    returns ``(model, image_size)``; raises :class:`InputError` naming the file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise MissingInputError(f"{path}: checkpoint file not found")
    try:
        model = loading.load_method(path, map_location=device)  # looked up at call time: tests stand a model in
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


def load_segmentors(ckpt_paths: Sequence[str | Path], device: str = "cpu") -> tuple[list[torch.nn.Module], int]:
    """:func:`load_segmentor` of each checkpoint of an ensemble: ``(models, image_size)``. All must segment the
    same structures with the same codes and slicing (``model.spec``) at the same slice size: otherwise an
    :class:`InputError` names the first checkpoint that differs from the first one, and how."""
    if not ckpt_paths:
        raise InputError("no checkpoint given")
    first_path = Path(ckpt_paths[0])
    first, image_size = load_segmentor(first_path, device)
    models = [first]
    for path in ckpt_paths[1:]:
        model, size = load_segmentor(path, device)
        if model.spec != first.spec:
            raise InputError(f"{path}: cannot ensemble it with {first_path}: {_spec_difference(model.spec, first.spec)}")
        if size != image_size:
            raise InputError(f"{path}: cannot ensemble it with {first_path}: its slice size is {size}, not {image_size}")
        models.append(model)
    return models, image_size


def _spec_difference(spec: DataSpec, first: DataSpec) -> str:
    """What differs between two label sets and slicings, in words."""
    a, b = spec.to_dict(), first.to_dict()
    name = {"structures": "segments", "codes": "writes codes", "modality": "segments modality",
            "slice_axis": "slices along canonical axis", "margin_mm": "keeps a margin (mm) of",
            "field_of_view": "was trained on slices showing the"}
    key = next(k for k in a if a[k] != b[k])
    return f"it {name.get(key, key)} {a[key]}, the other {b[key]}"
