"""The ``mkdseg`` command.

``mkdseg fit|validate|test|predict`` are LightningCLI subcommands (``--config``, ``--print_config``,
dotted overrides such as ``--model.lambda_kd_real=0.3``); ``mkdseg convert``, ``preprocess``, ``segment`` and
``evaluate`` work on files rather than on a training run, ``compare`` and ``sweep`` on many runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mkdseg.training import MKDSegCLI, build_cli, method_name, name_run_after_method

__all__ = ["MKDSegCLI", "VERBS", "build_cli", "main", "method_name", "name_run_after_method"]


def _preprocess(argv: list[str]) -> int:
    from mkdseg.data.preprocess import preprocess_main

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
    build_cli(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
