"""The ``mkdseg`` command.

``mkdseg fit|validate|test|predict`` are LightningCLI subcommands (``--config``, ``--print_config``,
dotted overrides such as ``--model.lambda_kd_real=0.3``); ``mkdseg preprocess`` and ``mkdseg segment``
are the two verbs that work on NIfTI files rather than on a training run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from lightning.pytorch.cli import LightningCLI

from mkdseg.callbacks import DiceTableCallback, SampleImagesCallback
from mkdseg.data import UnpairedSliceDataModule
from mkdseg.methods import SegmentationMethod
from mkdseg.prediction_writer import VolumePredictionWriter


class MKDSegCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # the networks' input size is the data's slice size: one option, not two that can disagree
        parser.link_arguments("data.image_size", "model.init_args.image_size")
        # the structures (class count, names, output codes) and slicing come from the data, and are
        # stored with the model in every checkpoint
        parser.link_arguments("data.data_spec", "model.init_args.data_spec", apply_on="instantiate")
        # one folder per run: the logger writes (logs, config, checkpoints, figures, reports) where
        # trainer.default_root_dir says, never somewhere a config's logger save_dir said
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir", compute_fn=_run_folder)


def _run_folder(default_root_dir: str | None) -> str:
    return "." if default_root_dir is None else str(default_root_dir)  # Lightning's default: the working directory


def build_cli(args: list[str] | None = None, run: bool = True) -> MKDSegCLI:
    return MKDSegCLI(
        SegmentationMethod,
        UnpairedSliceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [DiceTableCallback(), SampleImagesCallback(), VolumePredictionWriter()]},
        args=args,
        run=run,
    )


def _preprocess(argv: list[str]) -> int:
    from mkdseg.data.prepare import preprocess_main

    return preprocess_main(argv)


def _segment(argv: list[str]) -> int:
    from mkdseg.inference import segment_main

    return segment_main(argv)


def _sweep(argv: list[str]) -> int:
    from mkdseg.sweep import main as sweep_main

    return sweep_main(argv)


VERBS: dict[str, Callable[[list[str]], int]] = {"preprocess": _preprocess, "segment": _segment, "sweep": _sweep}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in VERBS:
        return VERBS[args[0]](args[1:])
    build_cli(argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
