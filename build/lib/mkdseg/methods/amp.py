"""16-bit mixed precision with several optimizers: one loss scale per optimisation phase.

A *phase* is one backward followed by the steps of the optimizers whose networks it trains (MKD has
three: the generators, the discriminators, the segmentors). Each phase gets a ``GradScaler`` of its own,
updated once per phase. Lightning's ``MixedPrecision`` plugin instead calls ``scaler.step`` and
``scaler.update`` around every optimizer step with one scaler: the second optimizer of a phase is then
unscaled with a scale that the first one's ``update`` may already have changed, the growth interval
counts six updates per iteration, and one phase's overflow lowers the others' scale. The phase scalers
start as copies of the plugin's scaler (same settings), which is then detached from the plugin (its
public ``scaler`` attribute set to ``None``): the plugin keeps running autocast only.
"""

from __future__ import annotations

import copy

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_warn


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
