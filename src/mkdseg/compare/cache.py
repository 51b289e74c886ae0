"""The slice cache a comparison trains on: ``--cache`` if it holds one, else made there from ``--target`` and
``--assistant`` (two nnU-Net raw datasets) at the size preset's image size."""

from __future__ import annotations

import argparse
from pathlib import Path

from mkdseg.data.cache import SliceCache
from mkdseg.data.preprocess import preprocess_nnunet

#: the options of ``mkdseg preprocess`` that compare takes to read the datasets, passed on to it
DATASET_OPTIONS = ("target_modality", "assistant_modality", "target_orientation", "assistant_orientation")


def prepare_cache(args: argparse.Namespace, image_size: int | None) -> Path:
    cache = (args.cache or args.out / "cache").resolve()
    if SliceCache(cache).exists:
        return cache
    if args.target is None or args.assistant is None:
        raise FileNotFoundError(f"--cache {cache} holds no slice cache: give --target and --assistant (nnU-Net raw "
                                "datasets) to make it, or --cache a folder made by `mkdseg preprocess`")
    options = {name: getattr(args, name) for name in DATASET_OPTIONS if getattr(args, name)}
    if image_size:
        options["image_size"] = int(image_size)
    print(f"preprocessing {args.target} and {args.assistant} into {cache} "
          f"({', '.join(f'{k}={v}' for k, v in options.items()) or 'the defaults of mkdseg preprocess'})", flush=True)
    try:
        made = preprocess_nnunet(args.target, args.assistant, cache, progress=False, **options)
    except (ValueError, OSError) as e:  # a dataset that cannot be read: InputError is a ValueError
        raise ValueError(f"preprocessing {args.target} and {args.assistant} failed: {e}") from e
    print(f"preprocessed: {', '.join(f'{len(made.volumes(m))} {m}' for m in made.modalities)} volumes in {made.root}",
          flush=True)
    return cache
