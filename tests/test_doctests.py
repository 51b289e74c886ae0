"""The examples in the docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import mkdseg


def modules_with_examples() -> list[str]:
    """The modules whose source holds a docstring example (``>>>``): the only ones doctest has anything to run in."""
    names = []
    for info in pkgutil.walk_packages(mkdseg.__path__, "mkdseg."):
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and ">>> " in Path(spec.origin).read_text():
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
