"""The recommended method's model, trained after the comparison (``--final``): one ``mkdseg fit``."""

from __future__ import annotations

from dataclasses import dataclass

from mkdseg.training import fit_and_test


@dataclass(frozen=True)
class FinalRun:
    """``mkdseg fit`` of the recommended row: ``args`` (see :meth:`mkdseg.compare.plan.RunPlan.final_run`)."""

    method: str
    args: tuple[str, ...]

    @property
    def command(self) -> str:
        return "mkdseg fit " + " ".join(self.args)


@dataclass(frozen=True)
class FinalModel:
    checkpoint: str
    weights: str  # "best validation" (the comparison's choice of weights), or "final" where nothing validated


def fit_final(final: FinalRun) -> FinalModel:
    """Train ``final`` in this process; its checkpoint of the best validation (else its last)."""
    fitted = fit_and_test(list(final.args), test=False)
    best = fitted.best
    if best is not None:
        return FinalModel(best.best_model_path, "best validation")
    return FinalModel(fitted.cli.trainer.checkpoint_callback.last_model_path, "final")


def announce_start(final: FinalRun) -> None:
    print(f"training the final {final.method} model: {final.command}", flush=True)


def announce(final: FinalRun, model: FinalModel) -> None:
    print(f"the {final.method} model ({model.weights} weights): {model.checkpoint}\n"
          f"segment scans with it: mkdseg segment --ckpt {model.checkpoint} -i SCANS -o LABELS", flush=True)
