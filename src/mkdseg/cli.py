"""The ``mkdseg`` command.

``mkdseg fit|validate|test|predict`` are LightningCLI subcommands (``--config``, ``--print_config``,
dotted overrides such as ``--model.lambda_kd_real=0.3``); ``mkdseg convert``, ``preprocess``, ``segment`` and
``evaluate`` work on files rather than on a training run, ``compare`` and ``sweep`` on many runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mkdseg.compare.cli import compare_main
from mkdseg.data.convert import convert_main
from mkdseg.data.preprocess import preprocess_main
from mkdseg.evaluate import evaluate_main
from mkdseg.inference import segment_main
from mkdseg.sweep import main as sweep_main
from mkdseg.training import MKDSegCLI, build_cli, method_name, name_run_after_method

__all__ = ["MKDSegCLI", "VERBS", "build_cli", "main", "method_name", "name_run_after_method"]


VERBS: dict[str, Callable[[list[str]], int]] = {
    "preprocess": preprocess_main, "segment": segment_main, "sweep": sweep_main, "compare": compare_main,
    "evaluate": evaluate_main, "convert": convert_main,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in VERBS:
        return VERBS[args[0]](args[1:])
    build_cli(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
