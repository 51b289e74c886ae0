"""The random streams (torch, CUDA, numpy, python) that augmentation and the image pools draw from.

Checkpoints hold every rank's; a resumed run restores them when training starts, so it draws what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """This process's random streams (CPU tensors and plain objects only)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = (kind, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian))  # plain types:
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}  # weights_only loads
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
