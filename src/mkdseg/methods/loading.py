"""A trained method back from its checkpoint: the class that wrote it, its options and its weights."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from mkdseg.methods.base import METHOD_KEY, SegmentationMethod


def load_method(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationMethod:
    """Restore the method (class and weights) that wrote a checkpoint, in eval mode."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    class_path = checkpoint.get(METHOD_KEY) if isinstance(checkpoint, dict) else None
    if not class_path:
        raise ValueError(f"{path}: not an mkdseg checkpoint (no '{METHOD_KEY}' entry)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load_from_checkpoint(path, map_location=map_location).eval()
