"""Subject-level cross-validation folds, fixed once and saved next to the data.

Subjects are sorted by id, shuffled with ``seed`` and dealt round-robin into ``n_folds`` folds, so fold
sizes differ by at most one and no subject is in two folds. The result is written to
``<root>/splits_<modality>_<n>fold.json`` the first time and read back afterwards, so a run, its
resumption and a later ``test`` all use the same split; edit the file to impose a split of your own.
If the data's subjects no longer match the file, that is an error for real data (delete the file to
make a new split) and a fresh split for generated data (``strict=False``). With MM-WHS's 20 CT subjects and ``n_folds=2`` this is the paper's protocol:
10 CT subjects train and 10 validate per fold (all MR subjects are assistant data in both folds).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mkdseg.io import atomic_write_text


def make_folds(subjects: list[str], n_folds: int, seed: int = 0) -> list[list[str]]:
    if n_folds < 2:
        raise ValueError(f"data.n_folds must be >= 2, got {n_folds}")
    if len(subjects) < n_folds:
        raise ValueError(f"data.n_folds={n_folds} needs at least {n_folds} target subjects, found {len(subjects)}")
    order = sorted(subjects)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::n_folds]) for i in range(n_folds)]


def load_or_create_folds(
    root: Path, modality: str, subjects: list[str], n_folds: int, seed: int = 0, strict: bool = True
) -> list[list[str]]:
    path = Path(root) / f"splits_{modality}_{n_folds}fold.json"
    if path.exists():
        try:
            folds = json.loads(path.read_text())["folds"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid split file ({e})") from e
        in_file = [s for f in folds for s in f]
        if len(in_file) == len(set(in_file)) == len(subjects) and set(in_file) == set(subjects):
            return folds
        if strict:
            raise ValueError(
                f"{path}: its subjects do not match the {len(subjects)} {modality} subjects in the data "
                f"(missing: {sorted(set(subjects) - set(in_file))}, unknown: {sorted(set(in_file) - set(subjects))}); "
                "delete the file to make a new split"
            )
    folds = make_folds(subjects, n_folds, seed)
    atomic_write_text(path, json.dumps({"modality": modality, "n_folds": n_folds, "seed": seed, "folds": folds}, indent=1))
    return folds


def train_val_subjects(folds: list[list[str]], fold: int) -> tuple[list[str], list[str]]:
    if not 0 <= fold < len(folds):
        raise ValueError(f"data.fold must be in 0..{len(folds) - 1} for {len(folds)} folds, got {fold}")
    val = folds[fold]
    train = sorted(s for i, f in enumerate(folds) if i != fold for s in f)
    return train, val
