"""What a checkpoint holds besides weights, optimizers and loops, for exact resume: every rank's random
streams (:mod:`mkdseg.methods.rng`), the phase loss scales (:mod:`mkdseg.methods.amp`) and the image
pools, one entry per rank under DDP (:mod:`mkdseg.methods.distributed`)."""

from __future__ import annotations

from mkdseg.methods.distributed import gather_per_rank, pick_rank
from mkdseg.methods.rng import rng_state, set_rng_state


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


def save_image_pools(translator, checkpoint: dict) -> None:
    """A translator's ``pool_t`` and ``pool_a`` are training state too: one pair per rank under DDP."""
    checkpoint["image_pools"] = gather_per_rank({"t": translator.pool_t.state_dict(), "a": translator.pool_a.state_dict()})


def load_image_pools(translator, checkpoint: dict, device) -> None:
    pools = checkpoint.get("image_pools")
    if pools:
        pools = pick_rank(pools) if isinstance(pools, list) else pools
        translator.pool_t.load_state_dict(pools["t"], device)
        translator.pool_a.load_state_dict(pools["a"], device)
