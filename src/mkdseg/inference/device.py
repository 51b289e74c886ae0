"""Where and at what precision the segmentor runs: ``--device``, ``--precision`` and :class:`SlicePredictor`.

``auto`` precision runs the network under bfloat16 autocast where the hardware does bfloat16 natively
(CUDA; CPUs with AVX512-BF16 or AMX), about twice as fast on such CPUs; ``fp32`` gives the arithmetic of
``mkdseg test`` exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from mkdseg.data.nifti import InputError
from mkdseg.mirroring import Mirroring, mirrored_mean

PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


class SlicePredictor:
    """The probabilities of batches of slices: one model's ``predict_proba``, or the mean of several models'
    (an ensemble of folds' or seeds' checkpoints), each averaged over test-time mirror images (``mirroring``,
    :mod:`mkdseg.mirroring`), on a device and at a precision.

    ``predict(x [B, 1, S, S] float32 in [-1, 1]) -> probabilities [B, C, S, S] float32 on the CPU``,
    with ``S = image_size``. One model without mirroring computes exactly what ``model.predict_proba`` does.
    """

    def __init__(self, model: torch.nn.Module | Sequence[torch.nn.Module], image_size: int, device: str = "cpu",
                 precision: str = "fp32", mirroring: Mirroring | None = None):
        models = list(model) if isinstance(model, (list, tuple)) else [model]
        if not models:
            raise ValueError("SlicePredictor needs at least one model")
        self.models = [m.to(device).eval() for m in models]
        self.model = self.models[0]
        self.image_size = image_size
        self.device = torch.device(device)
        self.precision = precision
        self.mirroring = mirroring

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        total = None
        with self._autocast():
            for model in self.models:
                probs = mirrored_mean(lambda v, m=model: {"p": m.predict_proba(v)}, x, self.mirroring)["p"].float()
                total = probs if total is None else total + probs
        if len(self.models) > 1:
            total = total / len(self.models)
        return total.cpu()


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bfloat16 where the hardware computes it natively (CUDA, CPUs with AVX512-BF16/AMX), else fp32."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def resolve_device(device: str) -> str:
    """``auto``: CUDA if there is one, else the CPU; a CUDA device where there is none is an :class:`InputError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device
