"""Training a run in Python: the ``mkdseg fit|validate|test|predict`` LightningCLI built from arguments, and
:func:`fit_and_test`, the one "fit, then test the weights of the best validation" that every caller uses
(``compare``'s runs and its final model, ``make demo``, the lab's probes).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from mkdseg.callbacks import (DiceTableCallback, EvaluationReportWriter, FinalLastCheckpoint, SampleImagesCallback,
                              VolumePredictionWriter)
from mkdseg.data import UnpairedSliceDataModule
from mkdseg.io import atomic_write_text
from mkdseg.methods import SegmentationMethod
from mkdseg.presets import with_preset_paths

#: the metric whose best value a run's best-validation checkpoint keeps (the primary predictor's mean Dice)
BEST_MONITOR = "val/dice"


class MKDSegCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # the networks' input size is the data's slice size, as resolved (data.image_size, or the cache's when
        # unset): one option, not two that can disagree
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="instantiate")
        # the structures (class count, names, output codes) and slicing come from the data, and are
        # stored with the model in every checkpoint
        parser.link_arguments("data.data_spec", "model.init_args.data_spec", apply_on="instantiate")
        # one folder per run: the logger writes (logs, config, checkpoints, figures, reports) where
        # trainer.default_root_dir says, never somewhere a config's logger save_dir said
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir", compute_fn=_run_folder)

    def parse_arguments(self, parser, args) -> None:
        # `args` given: a caller in Python (compare, the demo) chose them, and its own command line in sys.argv is
        # not meant for this parser; LightningCLI would warn about the two
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        # the run folder carries the method's name: <default_root_dir>/<method>/version_N
        name_run_after_method(self.config[self.subcommand] if self.subcommand else self.config)


def method_name(class_path: str) -> str:
    """A method's run name: its class name in snake_case, without a ``Module`` suffix.

    Example:
        >>> method_name("mkdseg.methods.JointTraining"), method_name("mkdseg.methods.MKDModule")
        ('joint_training', 'mkd')
    """
    name = class_path.rpartition(".")[2].removesuffix("Module") or class_path.rpartition(".")[2]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def name_run_after_method(config) -> None:
    """Set ``name`` of the config's loggers to the method's name where the config leaves it at the logger's own
    default (TensorBoardLogger's and CSVLogger's ``lightning_logs``); a name the user sets wins. Loggers whose
    default is no name (W&B's run name: W&B or a sweep picks one) are left alone."""
    model = getattr(config, "model", None)
    class_path = getattr(model, "class_path", None)
    trainer = getattr(config, "trainer", None)
    loggers = getattr(trainer, "logger", None)
    if not class_path or not loggers:
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is None or not getattr(logger, "class_path", None):
            continue
        module_name, _, class_name = logger.class_path.rpartition(".")
        try:
            parameter = inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters.get("name")
        except (ImportError, AttributeError, TypeError, ValueError):
            continue
        default = None if parameter is None else parameter.default
        if isinstance(default, str) and getattr(init_args, "name", default) == default:
            init_args.name = method_name(class_path)


def _run_folder(default_root_dir: str | None) -> str:
    return "." if default_root_dir is None else str(default_root_dir)  # Lightning's default: the working directory


def build_cli(args: list[str] | None = None, run: bool = True) -> MKDSegCLI:
    """The LightningCLI of ``args`` (default: the command line); ``--config NAME`` may name a shipped preset
    (``cpu``, ``gpu``, ``recipe``, ``joint``, ...: :mod:`mkdseg.presets`)."""
    args = with_preset_paths(sys.argv[1:] if args is None else list(args))
    return MKDSegCLI(
        SegmentationMethod,
        UnpairedSliceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        # FinalLastCheckpoint: whatever max_steps, a run's final weights are in last.ckpt (of the config's
        # ModelCheckpoint with save_last), for `mkdseg test` and for extending the run
        trainer_defaults={"callbacks": [DiceTableCallback(), SampleImagesCallback(), VolumePredictionWriter(),
                                        EvaluationReportWriter(), FinalLastCheckpoint()]},
        args=args,
        run=run,
    )


def best_checkpoint(trainer):
    """The fit's best-validation ``ModelCheckpoint`` (monitoring ``val/dice``) if it has one and the data validate
    (``data.n_val`` > 0), else ``None``: then the final weights are the ones to test."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and getattr(datamodule.hparams, "n_val", 1) == 0:
        return None
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor == BEST_MONITOR:
            if not callback.best_model_path:
                raise RuntimeError("best-validation weights: no validation ran within trainer.max_steps (is data.n_val 0, "
                                   "or trainer.val_check_interval past max_steps?), so there are no best weights to test")
            return callback
    return None


@dataclass
class Fitted:
    """What :func:`fit_and_test` leaves: the CLI (model, datamodule, trainer), the fit's seconds (wall clock, and
    ``fit_cpu_s``: CPU seconds of this process, which a neighbour's load does not inflate), the
    best-validation checkpoint callback (``None`` without one) and the test summaries of the tested weights
    (``test``: the best validation's where there is one) and of the final weights (``test_last``)."""

    cli: MKDSegCLI
    fit_s: float
    best: object | None
    test: dict | None
    test_last: dict | None
    fit_cpu_s: float = float("nan")


def fit_and_test(args: list[str], callbacks=(), test: bool = True, surface_distances: bool = True,
                 config_out: Path | None = None) -> Fitted:
    """``mkdseg fit`` with ``args`` (``--config``s and ``--key=value`` overrides), then, with ``test``, ``mkdseg test``
    of the final weights and, where the config keeps the best validation's (a ``ModelCheckpoint`` on ``val/dice``),
    of those: the held-out fold is tested once per set of weights, and never chooses which. ``config_out``: where
    to write the merged config, as LightningCLI resolved it (the run's record)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    cli = build_cli(args, run=False)
    if config_out is not None:
        atomic_write_text(config_out, cli.parser.dump(cli.config, skip_none=False))
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    best = best_checkpoint(cli.trainer)
    if not test:
        return Fitted(cli, fit_s, best, None, None, fit_cpu_s)
    # surface distances of whole scans are most of a test's time: a caller that records only Dice turns them off
    cli.model.assd_in_test = surface_distances
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    last = cli.model.evaluation_summary("test")
    if best is None:
        return Fitted(cli, fit_s, None, last, last, fit_cpu_s)
    if _step_of(best.best_model_path) == cli.trainer.global_step:  # the best weights are the final ones: tested above
        return Fitted(cli, fit_s, best, last, last, fit_cpu_s)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best.best_model_path, verbose=False)
    return Fitted(cli, fit_s, best, cli.model.evaluation_summary("test"), last, fit_cpu_s)


def _step_of(checkpoint_path: str) -> int | None:
    """The iteration a ``best-step=N.ckpt`` checkpoint was saved at (``None`` for another name)."""
    found = re.search(r"step=(\d+)", Path(checkpoint_path).stem)
    return int(found.group(1)) if found else None
