"""Shared fixtures: a tiny phantom, tiny networks and a quiet CPU trainer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from mkdseg.data import UnpairedSliceDataModule
from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.phantom import generate_phantom
from mkdseg.labels import MMWHS, preset_structures
from mkdseg.methods import MKDModule

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# the smallest networks that still have every layer type of the real ones
TINY_MODEL = dict(
    image_size=32, gen_filters=4, gen_blocks=1, disc_filters=4, disc_layers=2,
    seg_channels=(4, 8, 16), seg_strides=(2, 2), seg_res_units=1, pool_size=4, eval_batch_size=8,
)
TINY_PHANTOM = dict(image_size=32, phantom_subjects=4, phantom_slices=8)


def cli_options(cls: type) -> dict[str, object]:
    """``{option: its argparse action}`` of ``cls``'s ``__init__`` as the LightningCLI's parser (jsonargparse) lists
    them, following ``**kwargs`` up the class hierarchy."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model")
    return {a.dest.removeprefix("model."): a for a in parser._actions if a.dest.startswith("model.")}


# One intra-op thread: the tests' networks are tiny, and two threads spin-wait for each other as soon as
# anything else runs on a 2-core machine (measured: the suite took 7x longer with two).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom32")
    generate_phantom(root, n_target=4, n_assistant=4, image_size=32, n_slices=8, seed=0)
    return root


def write_tiny_cache(root: Path, target: str = "ct", assistant: str = "mr", image_size: int = 32,
                     n_subjects: int = 4) -> SliceCache:
    """A slice cache as `mkdseg preprocess` writes it (MM-WHS structures, random slices), for tests that
    only need a cache to exist: configs that read one at construction."""
    cache = SliceCache(root, source="mmwhs")
    rng = np.random.default_rng(0)
    for modality in (target, assistant):
        for i in range(n_subjects):
            record = VolumeRecord(subject=f"{i:03d}", modality=modality, n_slices=2, image_file="", plane="RA")
            image = rng.uniform(-1, 1, (2, image_size, image_size)).astype(np.float32)
            cache.write_volume(record, image, rng.integers(0, 8, image.shape).astype(np.uint8))
    cache.structures = preset_structures(MMWHS, [target, assistant])
    cache.roles = {"target": target, "assistant": assistant}
    cache.save()
    return cache


def make_datamodule(root: Path, **overrides) -> UnpairedSliceDataModule:
    options = dict(source="phantom", root=str(root), batch_size=2, **TINY_PHANTOM)
    options.update(overrides)
    return UnpairedSliceDataModule(**options)


def make_model(**overrides) -> MKDModule:
    return MKDModule(**{**TINY_MODEL, **overrides})


def quiet_trainer(**overrides) -> L.Trainer:
    options = dict(
        accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=tempfile.mkdtemp(prefix="mkdseg-test-"),  # reports and figures land here, not in the repo
    )
    options.update(overrides)
    return L.Trainer(**options)
