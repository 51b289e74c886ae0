"""Checks of a method's options. Each error names the option as a config writes it (``model.<name>``).

The CLI already refuses a value outside a ``Literal`` annotation; :func:`check_choice` is for a method
built in Python, which would otherwise take any string.
"""

from __future__ import annotations

from typing import Any, get_args


def check_at_least(minimum: float, **options: float) -> None:
    """``ValueError`` for the first of ``options`` below ``minimum``.

    >>> check_at_least(0, lambda_cyc=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: model.lambda_cyc must be >= 0, got -1.0
    """
    for name, value in options.items():
        if value < minimum:
            raise ValueError(f"model.{name} must be >= {minimum}, got {value}")


def check_positive(**options: float) -> None:
    """``ValueError`` for the first of ``options`` that is not > 0."""
    for name, value in options.items():
        if value <= 0:
            raise ValueError(f"model.{name} must be > 0, got {value}")


def check_choice(name: str, value: Any, choices: Any) -> None:
    """``ValueError`` unless ``value`` is one of the ``Literal`` type ``choices``.

    >>> from typing import Literal
    >>> check_choice("gan_lr_decay", "cosine", Literal["constant", "linear"])
    Traceback (most recent call last):
    ...
    ValueError: model.gan_lr_decay must be one of ('constant', 'linear'), got 'cosine'
    """
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"model.{name} must be one of {allowed}, got {value!r}")
