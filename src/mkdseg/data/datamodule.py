"""The LightningDataModule: unpaired assistant and target slices for training, target volumes for evaluation."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from mkdseg.data.appearance import Appearance, ApplyTo, RandomAppearance
from mkdseg.data.cache import CacheInfo, SliceCache
from mkdseg.data.phantom import DEFAULT_IMAGE_SIZE, PHANTOM_INFO, generate_phantom, render_record_as
from mkdseg.data.datasets import SliceSet, UnpairedSampler, UnpairedSliceDataset, VolumeDataset, first_item
from mkdseg.data.splits import load_or_create_folds, train_val_subjects
from mkdseg.labels import DataSpec, original_codes
from mkdseg.lightning_private import record_resolved_hparams
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

SOURCES = ("phantom", "cache")
ANATOMICAL_AXES = ("LR", "AP", "SI")
_LATERAL = re.compile(r"(?<![a-z])(left|right)(?![a-z])", re.IGNORECASE)  # also between underscores: "Left_Kidney"


class UnpairedSliceDataModule(L.LightningDataModule):
    """Pairs unpaired assistant (e.g. MR) and target (e.g. CT) slices.

    Args:
        source: ``phantom`` (generated into ``root`` on first use) or ``cache`` (a slice cache written by
            ``mkdseg preprocess`` from nnU-Net datasets).
        root: the slice-cache folder.
        target, assistant: modality names as the cache has them (``ct``, ``mri``, ``t2_spir`` ...); ``None``
            (the default) takes the roles the cache was preprocessed with (``mkdseg preprocess --target ...
            --assistant ...``; the phantom: ``ct`` and ``mri``), so configs need not name them. Swap them to
            reverse the direction. ``mr`` and ``mri`` name the same modality.
        image_size: slice size in pixels. ``None`` (the default): the cache's (``mkdseg preprocess
            --image-size``); the phantom is generated at 64. A size the cache was not made with is an
            error. The networks take the resolved size (``model.init_args.image_size``).
        n_folds, fold, split_seed: subject-level cross-validation over the target subjects
            (see :mod:`mkdseg.data.splits`). The held-out fold is the **test** set.
        n_val: target subjects of the training fold held out for validation (checkpoint selection);
            drawn with ``split_seed``, never test subjects. If the fold cannot spare them (fewer than
            ``n_val + 1`` subjects), or ``n_val=0``, there is no validation: the last weights are tested.
        n_assistant: use only the first ``n`` assistant subjects (sorted ids); ``None`` = all.
        n_target: use only the first ``n`` labelled target training subjects (after validation is set
            apart); ``None`` = all.
        batch_size: pairs per training batch.
        samples_per_epoch: training pairs per epoch; ``None`` = max(#target, #assistant slices), CycleGAN's epoch.
        augment, max_rotation, flip_prob: random flips and in-plane rotations (degrees).
        sampler_seed: seed of the order the training pairs are drawn in; ``None`` = the run's seed
            (``seed_everything``), so that a second seed of a run changes its data order too.
        flip_axes: anatomical axes a slice may be mirrored along (``LR``, ``AP``, ``SI``), each with
            ``flip_prob``, whatever array axis they lie on (the cache records each slice's layout).
            ``None``: ``[LR]``, unless a structure is named left or right (a mirrored right kidney
            would sit where the left one belongs, labelled wrongly): then no flip.
        phantom_subjects, phantom_slices, phantom_seed: size and seed of the generated phantom
            (subjects per modality, slices per subject).
        assistant_as_target: phantom only: batches also hold ``x_a_as_t``, each assistant slice as the
            target modality shows the same anatomy (a perfect translation), for the controls of
            :mod:`mkdseg.methods.oracle`, which bound what image alignment can give.
        appearance: randomised appearance of training images (:mod:`mkdseg.data.appearance`), re-drawn at
            every batch where the networks run: ``none`` (the paper), ``gin`` (a random shallow conv net),
            ``location_scale`` (random global intensity curves) or ``class_location_scale`` (a curve per
            structure and background). With MKDNoAlignment on the assistant images it is MKD's image
            alignment module made random; with joint training, a segmentor that must learn shape.
        appearance_on: which training images it re-styles: ``assistant``, ``target`` (the unlabelled target
            slices too) or ``both``.
        foreground_fraction: at least this share of the labelled slices drawn for training show a structure
            (nnU-Net's foreground oversampling): a cache cut to the body holds every slice of a scan, many of
            them without the structures. 0: every slice equally often.
        unlabelled_target: batches also hold ``x_u``, a slice of the training fold's target subjects beyond
            ``n_target`` (never the validation or test subjects), whose labels are never read: for the
            methods that learn from unlabelled target images (:class:`~mkdseg.methods.MeanTeacher`).
    """

    def __init__(
        self,
        source: str = "phantom",
        root: str = "data_cache/phantom",
        target: str | None = None,
        assistant: str | None = None,
        image_size: int | None = None,
        n_folds: int = 2,
        fold: int = 0,
        split_seed: int = 0,
        n_val: int = 1,
        n_assistant: int | None = None,
        n_target: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        samples_per_epoch: int | None = None,
        augment: bool = True,
        max_rotation: float = 15.0,
        flip_prob: float = 0.5,
        flip_axes: list[str] | None = None,
        sampler_seed: int | None = None,
        phantom_subjects: int = 20,
        phantom_slices: int = 32,
        phantom_seed: int = 0,
        assistant_as_target: bool = False,
        appearance: Appearance = "none",
        appearance_on: ApplyTo = "assistant",
        unlabelled_target: bool = False,
        foreground_fraction: float = 0.5,
    ):
        super().__init__()
        _check_choice("data.source", source, SOURCES)
        if assistant_as_target and source != "phantom":
            raise ValueError(f"data.assistant_as_target needs data.source=phantom (paired renderings), got {source!r}")
        if not 0 <= fold < n_folds:
            raise ValueError(f"data.fold must be in 0..{n_folds - 1} for data.n_folds={n_folds}, got {fold}")
        for name, value in (("n_assistant", n_assistant), ("n_target", n_target), ("samples_per_epoch", samples_per_epoch)):
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {value}")
        if n_val < 0:
            raise ValueError(f"data.n_val must be >= 0, got {n_val}")
        if not 0.0 <= foreground_fraction < 1.0:
            raise ValueError(f"data.foreground_fraction must be in [0, 1), got {foreground_fraction}")
        if batch_size < 1 or num_workers < 0 or (image_size is not None and image_size < 8):
            raise ValueError(f"invalid data sizes: batch_size={batch_size}, num_workers={num_workers}, image_size={image_size}")
        for axis in flip_axes or ():
            _check_choice("data.flip_axes entries", axis, ANATOMICAL_AXES)
        self.appearance = RandomAppearance(appearance, appearance_on)  # checks both options
        self.root = Path(root)
        self.described = self._describe(source)  # structures, modalities, roles, slicing
        target = self._modality("data.target", target or self.described.roles.get("target"))
        assistant = self._modality("data.assistant", assistant or self.described.roles.get("assistant"))
        if target == assistant:
            raise ValueError(f"data.target and data.assistant must differ, both are {target!r}")
        image_size = self._resolve_image_size(source, image_size)
        self.save_hyperparameters()
        sampler_seed = run_seed() if sampler_seed is None else sampler_seed
        self.hparams.update(source=source, target=target, assistant=assistant, image_size=image_size,
                            sampler_seed=sampler_seed)  # as resolved
        record_resolved_hparams(self)  # what loggers and checkpoints record too
        self.train_set: UnpairedSliceDataset | None = None

    def _describe(self, source: str) -> CacheInfo:
        """What the data holds (structures, modalities, roles, slicing), known before any volume is read:
        the model's class count and the checkpoint's label set follow from it."""
        if source == "phantom":
            return PHANTOM_INFO
        cache = SliceCache(self.root)
        if not cache.exists:
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} holds no slice cache (manifest.json); run `mkdseg preprocess "
                "--target <nnU-Net dataset> --assistant <nnU-Net dataset> --out <this folder>` first"
            )
        if not cache.complete:
            raise ValueError(f"data.root={str(self.root)!r}: the cache is incomplete (its preprocessing stopped); "
                             "re-run the same `mkdseg preprocess` command to finish it")
        return cache.info

    def _modality(self, option: str, value: str | None) -> str:
        """``value``, a modality the data holds; ``ValueError`` naming ``option``."""
        held = self.described.modalities
        if value is None:
            raise ValueError(f"{option} is not set and data.root={str(self.root)!r} records no such role "
                             f"(its modalities: {held}); set {option} to one of them")
        if value not in held:
            raise ValueError(f"{option}={value!r}: data.root={str(self.root)!r} holds modalities {held}; "
                             f"leave {option} unset to take the role the cache was preprocessed with")
        return value

    def _resolve_image_size(self, source: str, image_size: int | None) -> int:
        """The run's slice size: ``image_size``, or the cache's when ``None`` (the phantom: 64)."""
        if source == "phantom":
            return DEFAULT_IMAGE_SIZE if image_size is None else image_size
        cached = self.described.image_size
        if cached is None:
            if image_size is None:
                raise ValueError(f"data.root={str(self.root)!r} holds no square slices to take data.image_size from; "
                                 "re-run `mkdseg preprocess` into it, or set data.image_size")
            return image_size
        if image_size is None:
            return cached
        if image_size != cached:
            raise ValueError(
                f"data.image_size={image_size} but data.root={str(self.root)!r} holds {cached}x{cached} slices: leave "
                f"data.image_size unset (null: the cache's size, {cached}), or re-run `mkdseg preprocess` with "
                f"--image-size {image_size} into another --out"
            )
        return image_size

    @property
    def image_size(self) -> int:
        """The resolved slice size: what the networks are built for (linked to ``model.init_args.image_size``)."""
        return self.hparams.image_size

    @property
    def structures(self) -> list[str]:
        """The run's structure names in class order (class 0 is background)."""
        return self.described.structure_names

    @property
    def data_spec(self) -> dict:
        """The label set and slicing a model trained on this data records (``model.data_spec``)."""
        hp, cache = self.hparams, self.described
        codes = [s.codes[hp.target] for s in cache.structures]
        return DataSpec(tuple(self.structures), tuple(codes), hp.target, cache.slice_axis, cache.margin_mm,
                        cache.field_of_view, original_codes=original_codes(cache.structures, hp.target)).to_dict()

    @property
    def flip_axes(self) -> list[str]:
        if self.hparams.flip_axes is not None:
            return list(self.hparams.flip_axes)
        return [] if any(_LATERAL.search(name) for name in self.structures) else ["LR"]

    # -- data preparation ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.source == "phantom":
            generate_phantom(
                self.root, target=hp.target, assistant=hp.assistant, n_target=hp.phantom_subjects,
                n_assistant=hp.phantom_subjects, image_size=hp.image_size, n_slices=hp.phantom_slices, seed=hp.phantom_seed,
            )

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        cache = SliceCache(self.root)
        targets = cache.volumes(hp.target)
        assistants = cache.volumes(hp.assistant)
        if not targets or not assistants:
            raise ValueError(
                f"data.root={str(self.root)!r}: need {hp.target} and {hp.assistant} volumes, "
                f"found {len(targets)} and {len(assistants)}"
            )
        self._check_size(cache, targets[0])
        folds = load_or_create_folds(
            self.root, hp.target, [r.subject for r in targets], hp.n_folds, hp.split_seed, strict=hp.source != "phantom"
        )
        if len(folds) != hp.n_folds:
            raise ValueError(f"data.n_folds={hp.n_folds} disagrees with the split file's {len(folds)} folds")
        train_ids, test_ids = train_val_subjects(folds, hp.fold)
        train_ids, val_ids = self._set_validation_apart(train_ids)
        train_ids, unlabelled_ids = (train_ids[: hp.n_target], train_ids[hp.n_target :]) if hp.n_target else (train_ids, [])
        by_id = {r.subject: r for r in targets}
        self.target_train = SliceSet(cache, [by_id[s] for s in train_ids], foreground_fraction=hp.foreground_fraction)
        self.target_unlabelled = None
        if hp.unlabelled_target:
            if not unlabelled_ids:
                raise ValueError(f"data.unlabelled_target: the training fold has no target subject beyond data.n_target="
                                 f"{hp.n_target} ({len(train_ids)} training subjects after validation); lower data.n_target")
            self.target_unlabelled = SliceSet(cache, [by_id[s] for s in unlabelled_ids], labelled=False)
        self.assistant_train = SliceSet(cache, assistants[: hp.n_assistant] if hp.n_assistant else assistants,
                                        foreground_fraction=hp.foreground_fraction)
        self.val_records = [by_id[s] for s in val_ids]
        self.test_records = [by_id[s] for s in test_ids]
        self.cache = cache
        paired = None
        if hp.assistant_as_target:
            paired = [render_record_as(r, hp.target) for r in self.assistant_train.records]
        self.train_set = UnpairedSliceDataset(
            self.target_train, self.assistant_train, hp.augment, hp.max_rotation, hp.flip_prob,
            flip_axes=self.flip_axes, assistant_as_target=paired, unlabelled=self.target_unlabelled,
        )
        rank_zero_info(f"training images: {self.described_training()}")

    def described_training(self) -> str:
        """Which images the run trains on, in words (the results say which images each method saw)."""
        text = (f"{len(self.target_train.records)} labelled {self.hparams.target} subject(s), "
                f"{len(self.assistant_train.records)} labelled {self.hparams.assistant} subject(s)")
        if self.target_unlabelled is not None:
            text += f", {len(self.target_unlabelled.records)} unlabelled {self.hparams.target} subject(s)"
        return text

    def _set_validation_apart(self, train_ids: list[str]) -> tuple[list[str], list[str]]:
        """(training subjects, validation subjects) of the training fold; see ``n_val``."""
        n_val = self.hparams.n_val
        if n_val and len(train_ids) <= n_val:
            rank_zero_warn(f"data.n_val={n_val}: the training fold has only {len(train_ids)} target subjects, so none "
                           "is set apart for validation; no checkpoint selection, the last weights are tested (with step-based "
                           "validation a ModelCheckpoint saves only after validations unless save_on_train_epoch_end: true, "
                           "as the shipped configs set)")
            n_val = 0
        drawn = sorted(random.Random(f"{self.hparams.split_seed}/{self.hparams.fold}").sample(train_ids, n_val))
        return [s for s in train_ids if s not in drawn], drawn

    def _check_size(self, cache: SliceCache, record) -> None:
        image, _ = cache.load(record)
        if image.shape[1:] != (self.hparams.image_size,) * 2:
            raise ValueError(
                f"data.image_size={self.hparams.image_size} but {cache.root / record.image_file} has slices of "
                f"{image.shape[1]}x{image.shape[2]}: leave data.image_size unset (null: the cache's size), or re-run "
                f"`mkdseg preprocess` with --image-size {self.hparams.image_size}"
            )

    @property
    def samples_per_epoch(self) -> int:
        n = self.hparams.samples_per_epoch
        return n or max(len(self.target_train), len(self.assistant_train))

    def sample_slices(self, stage: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Fixed slices to show after evaluating ``stage`` (``"val"`` or ``"test"``): ``(x_t [n, 1, H, W],
        y_t [n, H, W], x_a [n, 1, H, W])``, the middle slices of that stage's first target volumes
        (cycling if there are fewer than ``n``) and ``n`` assistant training slices spread over the set;
        ``None`` if the stage has no volumes."""
        records = self.val_records if stage == "val" else self.test_records
        if not records:
            return None
        images, labels = [], []
        for i in range(n):
            record = records[i % len(records)]
            image, label = self.cache.load(record)
            s = min(max(record.n_slices // 2 + (i // len(records)) * 2 - 1, 0), record.n_slices - 1)
            images.append(torch.from_numpy(np.array(image[s], dtype=np.float32))[None])
            labels.append(torch.from_numpy(np.array(label[s], dtype=np.int64)))
        spread = np.linspace(0, len(self.assistant_train) - 1, n).round().astype(int).tolist()
        return torch.stack(images), torch.stack(labels), torch.stack([self.assistant_train[i][0] for i in spread])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches (``x_a``, ``x_t``): re-style their images as ``appearance`` says, on the device the
        networks run on, drawing from torch's global streams (which checkpoints save: exact on resume).
        Evaluation batches (whole volumes) are never re-styled."""
        if isinstance(batch, dict) and "x_t" in batch and self.appearance.keys:
            return self.appearance(batch, num_classes=len(self.structures) + 1)
        return batch

    # -- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Unpaired pairs; under DDP this rank's share (see :class:`UnpairedSampler`).

        When training resumes from a checkpoint taken mid-epoch, the loader starts at the first batch
        the interrupted run had not trained on (not at the epoch's start, as Lightning would replay it).
        The loader has a generator of its own, so creating its iterator draws nothing from the global
        RNG that augmentation and the image pools use (resumed runs stay on the same random stream).
        """
        hp = self.hparams
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        n_unlabelled = len(self.target_unlabelled) if self.target_unlabelled is not None else 1
        sampler = UnpairedSampler(len(self.target_train), len(self.assistant_train), self.samples_per_epoch, hp.sampler_seed,
                                  replicas, rank, n_unlabelled=n_unlabelled)
        epoch, batches_done = self._resume_point(trainer, len(sampler) // hp.batch_size)
        sampler.epoch, sampler.start = epoch, batches_done * hp.batch_size
        return DataLoader(
            self.train_set, batch_size=hp.batch_size, sampler=sampler, drop_last=True,
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
            generator=torch.Generator().manual_seed(hp.sampler_seed),
        )

    @staticmethod
    def _resume_point(trainer, batches_per_epoch: int) -> tuple[int, int]:
        """(epoch, batches of it already trained on) of the data: (0, 0) for a new run.

        Splits the iterations trained so far (``trainer.global_step``: one per batch in every mkdseg
        method, restored from the checkpoint on a resume) into whole epochs and a remainder. Lightning's
        own epoch number is no guide: a run stopped by ``max_steps`` in mid-epoch is counted as a finished
        epoch, so when it is extended Lightning starts a "new" epoch where the data is still mid-epoch.
        """
        if trainer is None or batches_per_epoch < 1:
            return 0, 0
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches_per_epoch = min(batches_per_epoch, limit)
        elif limit is not None and limit < 1.0:
            batches_per_epoch = max(1, int(batches_per_epoch * limit))
        return divmod(trainer.global_step, batches_per_epoch)

    def _volume_loader(self, records) -> DataLoader:
        return DataLoader(
            VolumeDataset(self.cache, records), batch_size=1, collate_fn=first_item, num_workers=0,
            generator=torch.Generator(),  # no draw from the global RNG (see train_dataloader)
        )

    def val_dataloader(self) -> DataLoader | list:
        """The validation subjects (set apart from the training fold); none: no validation at all."""
        return self._volume_loader(self.val_records) if self.val_records else []

    def test_dataloader(self) -> DataLoader:
        """The held-out fold: never used for training or for choosing a checkpoint."""
        return self._volume_loader(self.test_records)

    def predict_dataloader(self) -> DataLoader:
        return self._volume_loader(self.test_records)


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {choices}, got {value!r}")


def run_seed() -> int:
    """The seed ``seed_everything`` gave this run (LightningCLI's ``seed_everything``), or 0 if none was set.

    Lightning records it in the environment, where it also reaches DDP's other ranks."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else 0
