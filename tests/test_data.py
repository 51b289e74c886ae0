"""The DataModule: subject-level folds, unpaired sampling, aligned augmentation, option errors."""

from __future__ import annotations

import itertools
import json

import lightning as L
import numpy as np
import pytest
import torch

from mkdseg.data.augment import random_flip_rotate
from mkdseg.data.datasets import UnpairedSampler, UnpairedSliceDataset
from mkdseg.data.phantom import render_record_as, render_subject
from mkdseg.data.splits import load_or_create_folds, make_folds, train_val_subjects

from conftest import make_datamodule


def test_folds_partition_subjects_without_leakage():
    subjects = [f"{i:04d}" for i in range(1001, 1021)]
    folds = make_folds(subjects, 2, seed=0)
    assert sorted(s for f in folds for s in f) == sorted(subjects)
    assert [len(f) for f in folds] == [10, 10]
    for k in range(2):
        train, val = train_val_subjects(folds, k)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(subjects)
    assert make_folds(subjects, 2, seed=0) == folds  # fixed
    assert make_folds(subjects, 2, seed=1) != folds


def test_split_file_is_written_once_and_reused(tmp_path):
    subjects = ["a", "b", "c", "d"]
    first = load_or_create_folds(tmp_path, "ct", subjects, 2, seed=0)
    path = tmp_path / "splits_ct_2fold.json"
    custom = {"folds": [["a", "b"], ["c", "d"]]}
    path.write_text(json.dumps(custom))
    assert load_or_create_folds(tmp_path, "ct", subjects, 2, seed=0) == custom["folds"]
    assert first != custom["folds"] or first == custom["folds"]  # whatever was drawn, the file wins
    with pytest.raises(ValueError, match="splits_ct_2fold.json"):
        load_or_create_folds(tmp_path, "ct", subjects + ["e"], 2, seed=0)


def test_train_validation_and_test_subjects_are_disjoint(phantom_root):
    dms = []
    for fold in (0, 1):
        dm = make_datamodule(phantom_root, fold=fold, n_val=1)
        dm.prepare_data()
        dm.setup("fit")
        train = set(dm.target_train.subjects)
        val = {r.subject for r in dm.val_records}
        test = {r.subject for r in dm.test_records}
        assert len(train) == len(val) == 1 and len(test) == 2
        assert not train & val and not train & test and not val & test
        assert len(train | val | test) == 4
        dms.append(dm)
    # validation comes out of the training fold: the two folds test on complementary subjects
    assert {r.subject for r in dms[0].test_records} == set(dms[1].target_train.subjects) | {r.subject for r in dms[1].val_records}
    again = make_datamodule(phantom_root, fold=0, n_val=1)
    again.setup("fit")  # the validation draw is fixed by split_seed and fold: a resumed run or a later test agrees
    assert [r.subject for r in again.val_records] == [r.subject for r in dms[0].val_records]


def test_no_validation_when_the_fold_cannot_spare_subjects(phantom_root):
    dm = make_datamodule(phantom_root, n_val=2)  # the training fold holds 2 subjects: none left to train on
    with pytest.warns(UserWarning, match="no checkpoint selection"):
        dm.setup("fit")
    assert dm.val_records == [] and dm.val_dataloader() == []
    assert len(dm.target_train.subjects) == 2
    dm = make_datamodule(phantom_root, n_val=0)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and len(dm.target_train.subjects) == 2


def test_assistant_and_target_limits(phantom_root):
    dm = make_datamodule(phantom_root, n_assistant=2, n_target=1)
    dm.setup("fit")
    assert dm.assistant_train.subjects == ["000", "001"]
    assert len(dm.target_train.subjects) == 1


def test_assistant_partner_is_drawn_independently_each_epoch():
    sampler = UnpairedSampler(n_target=10, n_assistant=500, num_samples=1000, seed=0)
    first = torch.tensor(list(iter(sampler)))
    second = torch.tensor(list(iter(sampler)))
    t1, a1 = first // 500, first % 500
    t2, a2 = second // 500, second % 500
    # every target slice is visited equally often; partners are not a function of the target slice
    assert torch.bincount(t1, minlength=10).tolist() == [100] * 10
    partners_of_slice0 = set(a1[t1 == 0].tolist())
    assert len(partners_of_slice0) > 80  # 100 uniform draws from 500
    # and they change between epochs
    pairs1 = set(zip(t1.tolist(), a1.tolist()))
    pairs2 = set(zip(t2.tolist(), a2.tolist()))
    assert len(pairs1 & pairs2) < 0.3 * len(pairs1)  # ~18% by chance, 100% for a fixed pairing
    # the draw is reproducible for a given epoch, and Lightning's set_epoch does not move it (see UnpairedSampler)
    again = UnpairedSampler(n_target=10, n_assistant=500, num_samples=1000, seed=0, epoch=0)
    again.set_epoch(5)
    assert torch.equal(torch.tensor(list(iter(again))), first)
    assert torch.equal(torch.tensor(list(iter(again))), second)


def test_batches_pair_different_subjects_and_modalities(phantom_root):
    dm = make_datamodule(phantom_root, batch_size=4, augment=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x_t"].shape == (4, 1, 32, 32) and batch["x_a"].shape == (4, 1, 32, 32)
    assert batch["y_t"].dtype == torch.int64 and batch["y_t"].shape == (4, 32, 32)
    assert batch["x_t"].min() >= -1 and batch["x_t"].max() <= 1
    # item k pairs target slice k // n_a with assistant slice k % n_a: check against the sets directly
    t, a = int(batch["t_index"][0]), int(batch["a_index"][0])
    assert torch.equal(batch["x_t"][0], dm.target_train[t][0])
    assert torch.equal(batch["x_a"][0], dm.assistant_train[a][0])


def test_augmentation_moves_image_and_label_together():
    # a bright square labelled 1 on a dark background: after any flip/rotation the label must still
    # sit exactly where the bright pixels are
    image = -torch.ones(1, 32, 32)
    label = torch.zeros(32, 32, dtype=torch.int64)
    image[0, 6:14, 18:28] = 1.0
    label[6:14, 18:28] = 1
    g = torch.Generator().manual_seed(0)
    moved = 0
    for _ in range(20):
        im, lab = random_flip_rotate(image, label, max_degrees=30, flip_prob=0.5, generator=g)
        assert lab.dtype == torch.int64 and set(lab.unique().tolist()) <= {0, 1}
        bright = im[0] > 0.0
        agreement = (bright == (lab == 1)).float().mean().item()
        assert agreement > 0.97
        moved += not torch.equal(lab, label)
    assert moved > 10


def test_phantom_cache_is_generated_once(phantom_root):
    dm = make_datamodule(phantom_root)
    manifest = phantom_root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    dm.prepare_data()
    assert manifest.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(fold=2), "data.fold"),
        (dict(fold=-1), "data.fold"),
        (dict(source="nifti"), "data.source"),
        (dict(target="pet"), "data.target"),
        (dict(target="mri", assistant="mri"), "must differ"),
        (dict(n_assistant=0), "data.n_assistant"),
        (dict(source="cache", assistant_as_target=True), "data.assistant_as_target"),
    ],
)
def test_bad_data_options_fail_naming_the_option(phantom_root, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_datamodule(phantom_root, **overrides)


def test_image_size_must_match_the_cache(phantom_root):
    dm = make_datamodule(phantom_root, image_size=64)
    with pytest.raises(ValueError, match="data.image_size=64"):
        dm.setup("fit")


def test_image_size_and_roles_default_to_the_caches(tmp_path):
    """A cache's slice size and roles need not be repeated: unset, they are the cache's; a size it was not
    made with fails at construction naming both numbers and how to fix it."""
    from conftest import write_tiny_cache

    write_tiny_cache(tmp_path, "ct", "mri", image_size=16, n_subjects=2)
    dm = make_datamodule(tmp_path, source="cache", image_size=None)
    assert (dm.image_size, dm.hparams.image_size, dm.hparams.target, dm.hparams.assistant) == (16, 16, "ct", "mri")
    with pytest.raises(ValueError, match=r"data.image_size=32 but .* 16x16 slices.*unset.*--image-size 32"):
        make_datamodule(tmp_path, source="cache", image_size=32)
    swapped = make_datamodule(tmp_path, source="cache", image_size=None, target="mri", assistant="ct")
    assert (swapped.hparams.target, swapped.hparams.assistant) == ("mri", "ct")
    assert make_datamodule(tmp_path / "p", image_size=None).image_size == 64  # the phantom's default size


def test_cache_source_without_cache_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing.*mkdseg preprocess"):
        make_datamodule(tmp_path / "nothing", source="cache")


def test_validation_volumes_are_whole_labelled_volumes(phantom_root):
    dm = make_datamodule(phantom_root)
    dm.setup("validate")
    volume = next(iter(dm.val_dataloader()))
    assert volume["image"].shape == (8, 1, 32, 32)
    assert volume["label"].shape == (8, 32, 32)
    assert set(np.unique(volume["label"].numpy())) <= set(range(8))


def test_paired_rendering_is_the_assistant_subjects_anatomy_in_the_target_modality(phantom_root):
    dm = make_datamodule(phantom_root, assistant_as_target=True, augment=False)
    dm.prepare_data()
    dm.setup("fit")
    records = dm.assistant_train.records
    n_slices = records[0].n_slices
    k = 3 * len(dm.assistant_train) + n_slices + 2  # target slice 3 with assistant volume 1, slice 2
    item = dm.train_set[k]
    record = records[1]
    assert record.modality == "mri" and item["x_a_as_t"].shape == item["x_a"].shape
    paired = render_record_as(record, "ct")
    assert torch.equal(item["x_a_as_t"][0], torch.from_numpy(paired[2]))
    # the same person: the CT rendering's label map is the MR volume's label map
    _, ct_label = render_subject(record.extra["anatomy_seed"], "ct", paired.shape[-1], n_slices)
    assert torch.equal(item["y_a"], torch.from_numpy(ct_label[2].astype(np.int64)))
    assert not torch.allclose(item["x_a_as_t"], item["x_a"], atol=0.1)  # but another modality's appearance


def test_paired_rendering_gets_the_assistant_images_flip_and_rotation(phantom_root):
    dm = make_datamodule(phantom_root)
    dm.prepare_data()
    dm.setup("fit")
    assistant = dm.assistant_train
    # the "rendering" is the assistant image itself: only the same transform keeps the two equal
    own = [np.asarray(volume[0]) for volume in assistant.volumes]
    dataset = UnpairedSliceDataset(dm.target_train, assistant, augment=True, max_rotation=30, assistant_as_target=own)
    torch.manual_seed(0)
    items = [dataset[k] for k in range(0, len(dataset), 7)]
    assert all(torch.equal(i["x_a_as_t"], i["x_a"]) for i in items)
    unaugmented = UnpairedSliceDataset(dm.target_train, assistant, augment=False)
    assert any(not torch.equal(i["x_a"], unaugmented[k]["x_a"]) for k, i in zip(range(0, len(dataset), 7), items))
    with pytest.raises(ValueError, match="assistant_as_target"):
        UnpairedSliceDataset(dm.target_train, assistant, assistant_as_target=own[:-1])


def test_without_the_option_batches_hold_no_paired_rendering(phantom_root):
    dm = make_datamodule(phantom_root)
    dm.prepare_data()
    dm.setup("fit")
    assert set(dm.train_set[0]) == {"x_t", "y_t", "x_a", "y_a", "t_index", "a_index"}


def test_the_order_of_training_pairs_follows_the_run_seed_unless_set(phantom_root, monkeypatch):
    """data.sampler_seed unset takes seed_everything's seed, so a second seed of a run draws other pairs."""
    def drawn(**options):
        dm = make_datamodule(phantom_root, augment=False, batch_size=2, **options)
        dm.setup("fit")
        pairs = [(int(t), int(a)) for batch in itertools.islice(dm.train_dataloader(), 4)
                 for t, a in zip(batch["t_index"], batch["a_index"])]
        return dm.hparams.sampler_seed, pairs

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # restored afterwards
    assert drawn()[0] == 0
    L.seed_everything(3)
    seed, pairs = drawn()
    assert seed == 3 and pairs == drawn(sampler_seed=3)[1]
    assert pairs != drawn(sampler_seed=0)[1]
    assert drawn(sampler_seed=5)[0] == 5  # an explicit seed wins
