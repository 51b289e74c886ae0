"""Where and at what precision the segmentor runs: ``--device``, ``--precision`` and :class:`SlicePredictor`.

``auto`` precision runs the network under bfloat16 autocast where the hardware does bfloat16 natively
(CUDA; CPUs with AVX512-BF16 or AMX), about twice as fast on such CPUs; ``fp32`` gives the arithmetic of
``mkdseg test`` exactly.
"""

from __future__ import annotations

import contextlib

import torch

from mkdseg.data.nifti import InputError

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


def resolve_device(device: str) -> str:
    """``auto``: CUDA if there is one, else the CPU; a CUDA device where there is none is an :class:`InputError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device
