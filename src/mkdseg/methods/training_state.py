"""Training state that Lightning does not carry by itself, for exact resume, DDP and mixed precision.

* :func:`rng_state` / :func:`set_rng_state`: the random streams (torch, CUDA, numpy, python) that
  augmentation and the image pools draw from. Checkpoints hold every rank's; a resumed run restores
  them when training starts, so it draws what the uninterrupted run would have drawn.
* :func:`gather_per_rank` / :func:`pick_rank`: under DDP each rank has its own random streams and
  image pools; a checkpoint (written by rank 0) holds a list with one entry per rank.
* :class:`PhaseLossScaling`: 16-bit mixed precision with several optimizers. A *phase* is one
  backward followed by the steps of the optimizers whose networks it trains (MKD has three: the
  generators, the discriminators, the segmentors). Each phase gets a ``GradScaler`` of its own,
  updated once per phase. Lightning's ``MixedPrecision`` plugin instead calls ``scaler.step`` and
  ``scaler.update`` around every optimizer step with one scaler: the second optimizer of a phase is
  then unscaled with a scale that the first one's ``update`` may already have changed, the growth
  interval counts six updates per iteration, and one phase's overflow lowers the others' scale.
  The phase scalers start as copies of the plugin's scaler (same settings), which is then detached
  from the plugin: the plugin keeps running autocast only.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_warn


# -- per-rank state -----------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_per_rank(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective call under DDP; ``[obj]`` otherwise).

    ``obj`` must be picklable and hold CPU tensors only.
    """
    rank, size = _world()
    if size == 1:
        return [obj]
    parts: list = [None] * size
    dist.all_gather_object(parts, obj)
    return parts


def pick_rank(per_rank: list):
    """This rank's entry of a list written by :func:`gather_per_rank` (rank modulo its length if the
    world size changed since, which makes the resume approximate and is warned about)."""
    rank, size = _world()
    if len(per_rank) != size:
        rank_zero_warn(
            f"the checkpoint holds the training state of {len(per_rank)} process(es), this run has {size}: "
            "random streams and image pools are reused round-robin, so the resumed run is not the exact continuation"
        )
    return per_rank[rank % len(per_rank)]


# -- random streams ------------------------------------------------------------------------------
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


# -- loss scaling per phase ----------------------------------------------------------------------
class PhaseLossScaling:
    """One ``GradScaler`` per optimisation phase; disabled (a pass-through) unless the trainer runs
    16-bit mixed precision with a scaler. Phases are named after the networks their optimizers own.

    Usage in a manual-optimisation step (see ``ManualMethod._step``)::

        scaler = scaling.scaler(phase)
        manual_backward(scaler.scale(loss))
        for opt in optimizers: scaler.step(opt)   # skipped if this optimizer's gradients overflowed
        skipped = scaling.update(phase)           # once per phase
    """

    def __init__(self) -> None:
        self.template: torch.amp.GradScaler | None = None
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.skipped: dict[str, int] = {}
        self._pending: dict[str, dict] = {}

    @property
    def enabled(self) -> bool:
        return self.template is not None

    def adopt(self, trainer) -> None:
        """Take the precision plugin's scaler (if any) as the template of the phase scalers."""
        plugin = getattr(trainer, "precision_plugin", None)
        if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
            self.template, plugin.scaler = plugin.scaler, None

    def scaler(self, phase: str) -> torch.amp.GradScaler:
        if phase not in self.scalers:
            if self.template is None:
                self.scalers[phase] = torch.amp.GradScaler("cpu", enabled=False)
            else:
                self.scalers[phase] = copy.deepcopy(self.template)
                if phase in self._pending:
                    self.scalers[phase].load_state_dict(self._pending.pop(phase))
            self.skipped.setdefault(phase, 0)
        return self.scalers[phase]

    def update(self, phase: str) -> bool:
        """Update the phase's scale; True if a step of the phase was skipped (non-finite gradients)."""
        scaler = self.scalers[phase]
        if not scaler.is_enabled():
            return False
        before = scaler.get_scale()
        scaler.update()
        after = scaler.get_scale()
        if after >= before:
            return False
        self.skipped[phase] += 1
        if self.skipped[phase] == 1:
            rank_zero_warn(
                f"16-bit mixed precision: a step of phase {phase} was skipped (non-finite gradients at loss scale {before:g}; "
                f"now {after:g}). Skips are counted in train/amp_skipped/{phase}."
            )
        return True

    def state_dict(self) -> dict:
        return {
            "scalers": {phase: s.state_dict() for phase, s in self.scalers.items() if s.is_enabled()},
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict) -> None:
        self.skipped.update(state.get("skipped", {}))
        for phase, scaler_state in state.get("scalers", {}).items():
            if phase in self.scalers and self.scalers[phase].is_enabled():
                self.scalers[phase].load_state_dict(scaler_state)
            else:
                self._pending[phase] = scaler_state


# -- checkpoint hooks (called by SegmentationMethod) ---------------------------------------------
def save_training_state(module, checkpoint: dict) -> None:
    """Every rank's random streams, and the phase loss scales; a collective call under DDP."""
    checkpoint["rng_states"] = gather_per_rank(rng_state())
    scaling = getattr(module, "loss_scaling", None)  # manually optimised methods only
    if scaling is not None:
        checkpoint["loss_scaling"] = scaling.state_dict()


def load_training_state(module, checkpoint: dict) -> None:
    """Keep the random streams for :func:`resume_training_state`; restore the loss scales."""
    module._pending_rng_states = checkpoint.get("rng_states")
    if "loss_scaling" in checkpoint and getattr(module, "loss_scaling", None) is not None:
        module.loss_scaling.load_state_dict(checkpoint["loss_scaling"])


def resume_training_state(module) -> None:
    """At the start of training: continue the random streams of the checkpoint, if resuming from one.

    Not at load time: between loading and the first batch Lightning may draw from them (e.g. a
    sanity-check validation), which the uninterrupted run did not do at that point.
    """
    states = getattr(module, "_pending_rng_states", None)
    if states:
        set_rng_state(pick_rank(states))
    module._pending_rng_states = None


def save_image_pools(module, checkpoint: dict) -> None:
    """``module.pool_t`` and ``module.pool_a`` are training state too: one pair per rank under DDP."""
    checkpoint["image_pools"] = gather_per_rank({"t": module.pool_t.state_dict(), "a": module.pool_a.state_dict()})


def load_image_pools(module, checkpoint: dict) -> None:
    pools = checkpoint.get("image_pools")
    if pools:
        pools = pick_rank(pools) if isinstance(pools, list) else pools
        module.pool_t.load_state_dict(pools["t"], module.device)
        module.pool_a.load_state_dict(pools["a"], module.device)
