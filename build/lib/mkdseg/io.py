"""Atomic file writes: every file mkdseg writes (cache arrays and manifest, NIfTI outputs, reports,
split files) appears complete or not at all, and an existing file is replaced only by a complete one.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "report.txt"
>>> atomic_write_text(path, "done")
>>> path.read_text(), [p.name for p in path.parent.iterdir()]
('done', ['report.txt'])
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block completes,
    deleted when it raises (also on Ctrl-C). ``suffix`` ends the temporary name, for writers that pick
    a format by file name (nibabel: ``.nii.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name rather than mkstemp, whose 0600 mode would make the output unreadable to others
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
