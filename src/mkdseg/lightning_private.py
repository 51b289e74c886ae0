"""Every use of a private attribute of Lightning (2.6), in one place, each with why no public API serves.

Nothing else in mkdseg reads or writes a ``._name`` of a Lightning object: when Lightning changes one of
these, this module is the one to mend, and the tests named beside each function are the ones that break.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import LightningOptimizer


@contextmanager
def uncounted(optimizer) -> Iterator[None]:
    """Step ``optimizer`` without advancing ``trainer.global_step``.

    Lightning counts every optimizer step, six per MKD iteration; ``max_steps``, checkpoint intervals and
    step-based schedules must count iterations: every step is taken uncounted and each iteration is counted
    once by :func:`count_iteration`. Lightning has no public way to count one iteration per ``training_step``
    under manual optimisation: its manual loop (``_ManualOptimization.on_run_start``) installs
    ``_on_before_step``/``_on_after_step`` on every :class:`LightningOptimizer` for the ``training_step``, and
    ``LightningOptimizer.step`` calls them, so ``global_step`` grows by one per optimizer step. Upstream:
    Lightning-AI/pytorch-lightning#17958 (open; PR #19589 unmerged). The public alternatives fail here:
    stepping the raw ``optimizer.optimizer`` bypasses the strategy's ``optimizer_step`` (precision plugin,
    ``on_before_optimizer_step`` hooks, sharded strategies), and counting only the last optimizer's ``step()``
    loses the iteration whenever a loss-scale overflow makes the ``GradScaler`` skip that step.
    ``tests/test_mkd_step.py`` and ``tests/test_resume.py`` pin the counting.
    """
    if not isinstance(optimizer, LightningOptimizer):
        yield
        return
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def count_iteration(optimizer) -> None:
    """Advance ``trainer.global_step`` by one, as one counted step of ``optimizer`` would (whether or not a
    mixed-precision overflow made the scaler skip the actual steps); see :func:`uncounted`."""
    if isinstance(optimizer, LightningOptimizer):
        optimizer._on_before_step()
        optimizer._on_after_step()


def save_final_last_checkpoint(checkpoint: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Save ``checkpoint``'s ``last.ckpt`` with the weights of ``trainer.global_step``, unless it already did.

    ``ModelCheckpoint`` writes ``last.ckpt`` only together with another checkpoint of the same step and has no
    public "save last now": its own skip test (fast_dev_run, outside fit, already saved at this step), its
    monitor candidates and its save are private. ``tests/test_last_checkpoint.py`` checks this against
    every ``save_last`` setting.
    """
    if checkpoint._should_skip_saving_checkpoint(trainer):
        return
    candidates = checkpoint._monitor_candidates(trainer)
    if checkpoint.save_last != "link":
        checkpoint._save_last_checkpoint(trainer, candidates)
        return
    # save_last="link" would link last.ckpt to the older checkpoint again: the final weights get a file
    path = checkpoint.last_model_path or checkpoint.format_checkpoint_name(candidates, checkpoint.CHECKPOINT_NAME_LAST)
    if trainer.is_global_zero and os.path.islink(path):
        os.remove(path)
    trainer.strategy.barrier()
    checkpoint.last_model_path = path  # before saving: it is part of the callback's saved state
    checkpoint._save_checkpoint(trainer, path)


def record_resolved_hparams(datamodule: L.LightningDataModule) -> None:
    """Make the hyperparameters that loggers and checkpoints record the datamodule's resolved ones.

    Under LightningCLI the initial hparams are the config's (a null ``image_size``), which Lightning refuses
    to merge with the model's resolved ``image_size``; ``save_hyperparameters`` has no way to record values
    other than the constructor's arguments. ``tests/test_data.py`` checks what a checkpoint records.
    """
    datamodule._hparams_initial = copy.deepcopy(datamodule._hparams)


def sanity_checking(module: L.LightningModule) -> bool:
    """Whether ``module``'s trainer runs its sanity-check validation; False for a module with no trainer
    (``LightningModule.trainer`` raises then; the attached trainer is ``_trainer``)."""
    trainer = module._trainer
    return trainer is not None and trainer.sanity_checking
