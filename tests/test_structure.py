"""The methods read as parts: no chain of mkdseg's own classes deeper than four in any method's hierarchy."""

from __future__ import annotations

import inspect

import mkdseg.methods as methods


def own_chain(cls: type) -> int:
    """The longest path of mkdseg classes from ``cls`` up its bases, ``cls`` included."""
    bases = [b for b in cls.__bases__ if b.__module__.startswith("mkdseg.")]
    return 1 + max((own_chain(b) for b in bases), default=0)


def test_no_method_sits_on_a_chain_deeper_than_four():
    method_classes = [c for _, c in inspect.getmembers(methods, inspect.isclass) if issubclass(c, methods.SegmentationMethod)]
    assert len(method_classes) >= 12
    depths = {c.__name__: own_chain(c) for c in method_classes}
    assert max(depths.values()) <= 4, depths
