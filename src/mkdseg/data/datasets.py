"""Torch datasets over a slice cache: unpaired training slices and whole evaluation volumes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from mkdseg.data.augment import flip_dims, random_flip_rotate
from mkdseg.data.cache import SliceCache, VolumeRecord


class SliceSet:
    """All slices of some cached volumes, addressed by a flat index (arrays stay memory-mapped).

    ``labelled=False``: the volumes' labels are never read (items are ``(image, None)``): the unlabelled
    target subjects of the few-label setting, whose label files may well exist in the cache.

    ``foreground_fraction``: at least this share of a uniform draw over the index falls on slices that
    show a structure (the index lists those again, as often as it takes), the rest on any slice. A scan
    cut to the body has many slices without the structures; nnU-Net oversamples foreground likewise.
    """

    def __init__(self, cache: SliceCache, records: Sequence[VolumeRecord], labelled: bool = True,
                 foreground_fraction: float = 0.0):
        if not 0.0 <= foreground_fraction < 1.0:
            raise ValueError(f"data.foreground_fraction must be in [0, 1), got {foreground_fraction}")
        self.records = list(records)
        self.planes = [cache.plane(r) for r in self.records]  # in-plane anatomical layout of each volume's slices
        self.volumes = [cache.load(r) for r in self.records]
        if not labelled:
            self.volumes = [(image, None) for image, _ in self.volumes]
        for r, (_, label) in zip(self.records, self.volumes):
            if labelled and label is None:
                raise ValueError(f"{cache.root}/{r.image_file}: training volume has no label file")
        self.index = [(v, s) for v, r in enumerate(self.records) for s in range(r.n_slices)]
        if labelled and foreground_fraction > 0:
            self.index += self._foreground_repeats(foreground_fraction)

    def _foreground_repeats(self, fraction: float) -> list[tuple[int, int]]:
        """The slices showing a structure, repeated so that they make ``fraction`` of the whole index."""
        shown = [(v, s) for v, (_, label) in enumerate(self.volumes)
                 for s in np.flatnonzero(np.asarray(label).reshape(len(label), -1).any(axis=1)).tolist()]
        n, n_shown = len(self.index), len(shown)
        if not shown or n_shown >= fraction * n:
            return []
        # (n_shown * (1 + k)) / (n + k * n_shown) >= fraction
        repeats = math.ceil((fraction * n - n_shown) / (n_shown * (1 - fraction)))
        return shown * repeats

    def __len__(self) -> int:
        return len(self.index)

    def plane_of(self, i: int) -> str:
        return self.planes[self.index[i][0]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        v, s = self.index[i]
        image, label = self.volumes[v]
        image = torch.from_numpy(np.array(image[s], dtype=np.float32))[None]
        return image, None if label is None else torch.from_numpy(np.array(label[s], dtype=np.int64))

    @property
    def subjects(self) -> list[str]:
        return [r.subject for r in self.records]


class UnpairedSampler(DistributedSampler):
    """Draws ``num_samples`` (target slice, assistant slice) pairs per epoch, encoded as one integer
    ``t * n_assistant + a``, and hands this process its share of them. With ``n_unlabelled`` > 1 unlabelled
    target slices, each pair also gets one, drawn uniformly like the assistant slice: the code is then
    ``(t * n_assistant + a) * n_unlabelled + u`` (the pairs themselves are drawn as without them).

    Target slices are visited in a random order (repeated if ``num_samples`` exceeds them); each one's
    assistant partner is drawn uniformly and independently, anew every epoch, so there is no fixed
    pairing. The draws depend only on ``seed`` and the epoch.

    Distributed training: every rank computes the same epoch sequence and takes every
    ``num_replicas``-th pair from position ``rank`` (the sequence is padded by wrapping around so that
    all ranks get the same number of pairs), so rank ``r``'s ``i``-th batch and the other ranks'
    ``i``-th batches together are the single-process run's ``i``-th batch of ``num_replicas`` times
    the size. The class is a :class:`~torch.utils.data.DistributedSampler` so that Lightning uses it
    as it is instead of wrapping it in its ``DistributedSamplerWrapper``; it needs no process group.

    Epochs: each pass over the sampler is the next epoch of the data, counted by the sampler itself
    from the epoch it was constructed with. :meth:`set_epoch`, which Lightning calls at the start of
    every training epoch, is deliberately not followed: Lightning's epoch number runs one ahead of the
    data when a run stopped by ``max_steps`` in mid-epoch is extended (it counts the stopped epoch as
    finished), and following it would skip the rest of that epoch.

    Mid-epoch resume: ``start`` pairs of this rank's share of epoch ``epoch`` are skipped by the
    first pass (the ones trained on before the interruption), so that the iterations after a resume
    are those the uninterrupted run would have made. ``len()`` stays the full share, as Lightning
    counts the skipped batches as done.

    Attributes:
        samples_per_epoch: pairs drawn per epoch, over all ranks.
        num_samples: this rank's share (``len(sampler)``), as in ``DistributedSampler``.
    """

    def __init__(
        self, n_target: int, n_assistant: int, num_samples: int, seed: int = 0,
        num_replicas: int = 1, rank: int = 0, epoch: int = 0, start: int = 0, n_unlabelled: int = 1,
    ):
        # DistributedSampler.__init__ wants a dataset and an initialised process group: not needed here
        if n_target < 1 or n_assistant < 1:
            raise ValueError(f"need at least one target and one assistant slice, got {n_target} and {n_assistant}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        self.n_target, self.n_assistant, self.samples_per_epoch, self.seed = n_target, n_assistant, num_samples, seed
        self.n_unlabelled = max(1, n_unlabelled)
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = -(-num_samples // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle, self.drop_last = True, False
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in 0..{self.num_samples}, got {start}")
        self.epoch, self.start = epoch, start

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the data's epoch is the sampler's own pass count (see the class docstring)."""

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All ranks' (target, assistant, unlabelled target) slice indices of the current epoch,
        ``samples_per_epoch`` each (the last all 0 without unlabelled slices)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        repeats = -(-self.samples_per_epoch // self.n_target)
        target = torch.cat([torch.randperm(self.n_target, generator=g) for _ in range(repeats)])[: self.samples_per_epoch]
        assistant = torch.randint(self.n_assistant, (self.samples_per_epoch,), generator=g)
        unlabelled = torch.randint(self.n_unlabelled, (self.samples_per_epoch,), generator=g)  # drawn last: the pairs
        return target, assistant, unlabelled                                                 # stay as without it

    def __iter__(self) -> Iterator[int]:
        target, assistant, unlabelled = self.pairs()
        codes = ((target * self.n_assistant + assistant) * self.n_unlabelled + unlabelled).tolist()
        codes = (codes * -(-self.total_size // len(codes)))[: self.total_size]  # equal shares: pad by wrapping around
        share = codes[self.rank : self.total_size : self.num_replicas][self.start :]
        self.epoch, self.start = self.epoch + 1, 0
        return iter(share)

    def __len__(self) -> int:
        return self.num_samples


class UnpairedSliceDataset(Dataset):
    """Item ``k = t * n_assistant + a``: target slice ``t`` with assistant slice ``a``, augmented independently.

    ``assistant_as_target`` (optional, one array ``[slices, H, W]`` per assistant volume) is each
    assistant volume rendered in the target modality; the item then also holds ``x_a_as_t``, augmented
    with exactly ``x_a``'s flip and rotation. Only the phantom has such paired renderings.

    ``flip_axes``: the anatomical axes (``LR``, ``AP``, ``SI``) a slice may be mirrored along; each
    volume's slice layout says which array dims those are.

    ``unlabelled`` (optional, a :class:`SliceSet` with ``labelled=False``): target slices without labels;
    item ``(t * n_assistant + a) * n_unlabelled + u`` then also holds ``x_u``, unlabelled slice ``u``, augmented.
    """

    def __init__(
        self,
        target: SliceSet,
        assistant: SliceSet,
        augment: bool = True,
        max_rotation: float = 15.0,
        flip_prob: float = 0.5,
        flip_axes: Sequence[str] = ("LR",),
        assistant_as_target: Sequence[np.ndarray] | None = None,
        unlabelled: SliceSet | None = None,
    ):
        self.target, self.assistant, self.unlabelled = target, assistant, unlabelled
        self.flip_axes = tuple(flip_axes)
        self.augment, self.max_rotation, self.flip_prob = augment, max_rotation, flip_prob
        if assistant_as_target is not None and [len(v) for v in assistant_as_target] != [r.n_slices for r in assistant.records]:
            raise ValueError("assistant_as_target must hold one volume per assistant volume, with its slice count")
        self.assistant_as_target = assistant_as_target

    def __len__(self) -> int:
        return len(self.target) * len(self.assistant) * self.n_unlabelled

    @property
    def n_unlabelled(self) -> int:
        return len(self.unlabelled) if self.unlabelled is not None else 1

    def _augmented(self, image: torch.Tensor, label: torch.Tensor, plane: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.augment:
            return image, label
        return random_flip_rotate(image, label, self.max_rotation, self.flip_prob, dims=flip_dims(plane, self.flip_axes))

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        pair, u = divmod(int(k), self.n_unlabelled)
        t, a = divmod(pair, len(self.assistant))
        x_t, y_t = self._augmented(*self.target[t], self.target.plane_of(t))
        x_a, y_a = self.assistant[a]
        item = {"x_t": x_t, "y_t": y_t, "t_index": torch.tensor(t), "a_index": torch.tensor(a)}
        if self.unlabelled is not None:
            item["x_u"], _ = self._augmented(self.unlabelled[u][0], None, self.unlabelled.plane_of(u))
            item["u_index"] = torch.tensor(u)
        if self.assistant_as_target is None:
            item["x_a"], item["y_a"] = self._augmented(x_a, y_a, self.assistant.plane_of(a))
            return item
        v, s = self.assistant.index[a]
        paired = torch.from_numpy(np.array(self.assistant_as_target[v][s], dtype=np.float32))[None]
        # one flip and rotation for both
        both, item["y_a"] = self._augmented(torch.cat([x_a, paired]), y_a, self.assistant.plane_of(a))
        item["x_a"], item["x_a_as_t"] = both[:1], both[1:]
        return item


class VolumeDataset(Dataset):
    """One whole cached volume per item, for validation, test and prediction."""

    def __init__(self, cache: SliceCache, records: Sequence[VolumeRecord]):
        self.cache, self.records = cache, list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        image, label = self.cache.load(record)
        item = {
            "image": torch.from_numpy(np.array(image, dtype=np.float32))[:, None],
            "subject": record.subject,
            "modality": record.modality,
            "spacing": torch.tensor(record.spacing, dtype=torch.float64),
            "record": record,  # geometry, to write predictions back into the original scan
            "plane": self.cache.plane(record),  # the slices' in-plane anatomical layout (test-time mirroring)
        }
        if label is not None:
            item["label"] = torch.from_numpy(np.array(label, dtype=np.int64))
        return item


def first_item(batch: list):
    """Collate for volume loaders (batch size 1): volumes differ in slice count, so no stacking."""
    return batch[0]
