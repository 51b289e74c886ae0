"""The ``mkdseg`` command.

``mkdseg fit|validate|test|predict`` are LightningCLI subcommands (``--config``, ``--print_config``,
dotted overrides such as ``--model.lambda_kd_real=0.3``); ``mkdseg convert``, ``preprocess``, ``segment`` and
``evaluate`` work on files rather than on a training run, ``compare`` and ``sweep`` on many runs.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable

from lightning.pytorch.cli import LightningCLI

from mkdseg.callbacks import DiceTableCallback, FinalLastCheckpoint, SampleImagesCallback
from mkdseg.data import UnpairedSliceDataModule
from mkdseg.methods import SegmentationMethod
from mkdseg.prediction_writer import VolumePredictionWriter
from mkdseg.reports import EvaluationReportWriter


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


def _preprocess(argv: list[str]) -> int:
    from mkdseg.data.prepare import preprocess_main

    return preprocess_main(argv)


def _segment(argv: list[str]) -> int:
    from mkdseg.inference import segment_main

    return segment_main(argv)


def _compare(argv: list[str]) -> int:
    from mkdseg.compare.cli import compare_main

    return compare_main(argv)


def _evaluate(argv: list[str]) -> int:
    from mkdseg.evaluate import evaluate_main

    return evaluate_main(argv)


def _convert(argv: list[str]) -> int:
    from mkdseg.data.convert import convert_main

    return convert_main(argv)


def _sweep(argv: list[str]) -> int:
    from mkdseg.sweep import main as sweep_main

    return sweep_main(argv)


VERBS: dict[str, Callable[[list[str]], int]] = {
    "preprocess": _preprocess, "segment": _segment, "sweep": _sweep, "compare": _compare, "evaluate": _evaluate,
    "convert": _convert,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in VERBS:
        return VERBS[args[0]](args[1:])
    build_cli(argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
