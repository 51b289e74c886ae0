"""Any structure set from two nnU-Net raw datasets: label sets, slicing, crops, flips, errors, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mkdseg.data.augment import flip_dims, random_flip_rotate
from mkdseg.data.cache import MANIFEST, SliceCache
from mkdseg.data.nifti import InputError
from mkdseg.data.preprocess import preprocess_main, preprocess_nnunet
from mkdseg.data.roi import coarsest_axis, parse_slice_axis
from mkdseg.inference import write_cached_prediction
from mkdseg.labels import DataSpec
from mkdseg.methods import Baseline, load_method

from conftest import TINY_MODEL, make_datamodule

SHAPE = (24, 20, 10)  # voxels of every toy scan


def _write_case(root: Path, case: str, affine: np.ndarray, liver: int, kidney: int, extra_value: int | None = None,
                stored_affine: np.ndarray | None = None) -> None:
    """One toy scan stored in the orientation of ``affine``: a liver block on the patient's right
    (RAS world +x) and anterior (+y), a left kidney on the left (-x) and posterior (-y), whatever the
    array order. ``stored_affine``: a wrong header to write instead of ``affine``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(affine, ijk).reshape(*SHAPE, 3)
    x, y, z = (world - nib.affines.apply_affine(affine, (np.array(SHAPE) - 1) / 2)).transpose(3, 0, 1, 2)
    label = np.zeros(SHAPE, np.int16)
    label[(x > 4) & (x < 14) & (y > -2) & (y < 10) & (abs(z) < 10)] = liver
    label[(x < -4) & (x > -10) & (y > -8) & (y < 0) & (abs(z) < 6)] = kidney
    if extra_value is not None:
        label[0, 0, 0] = extra_value
    image = (50 + 100 * (label > 0) + np.random.default_rng(0).normal(0, 5, SHAPE)).astype(np.float32)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    header = affine if stored_affine is None else stored_affine
    nib.save(nib.Nifti1Image(image, header), root / "imagesTr" / f"{case}_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, header), root / "labelsTr" / f"{case}.nii.gz")


def make_dataset(root: Path, channel: str, labels: dict[str, int], affine: np.ndarray, liver: str, kidney: str,
                 n_cases: int = 3, extra_value: int | None = None, stored_affine: np.ndarray | None = None) -> Path:
    """An nnU-Net raw dataset declaring ``labels``; ``liver``/``kidney`` name the two drawn structures."""
    meta = {"channel_names": {"0": channel}, "labels": {"background": 0, **labels}, "file_ending": ".nii.gz"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(n_cases):
        _write_case(root, f"case_{i:03d}", affine, labels[liver], labels[kidney], extra_value if i == n_cases - 1 else None,
                    stored_affine)
    return root


LPS = np.diag([-2.0, -2.0, 4.0, 1.0])  # 2 x 2 x 4 mm, stored as the shared CT is
LAS = np.diag([-2.0, 2.0, 5.0, 1.0])   # stored as the shared MR is
CT_LABELS = {"spleen": 1, "left_kidney": 3, "Liver": 6, "aorta": 8}
MR_LABELS = {"liver": 1, "left kidney": 3}


@pytest.fixture()
def datasets(tmp_path):
    return (make_dataset(tmp_path / "ct", "CT", CT_LABELS, LPS, "Liver", "left_kidney"),
            make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney"))


def test_structures_matched_by_name_in_target_code_order_with_each_datasets_codes(datasets, tmp_path):
    ct, mr = datasets
    cache = preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    assert cache.structure_names == ["left_kidney", "Liver"]  # the target's spelling, in its code order (3, 6)
    assert [s.codes for s in cache.structures] == [{"ct": 3, "mri": 3}, {"ct": 6, "mri": 1}]
    assert cache.roles == {"target": "ct", "assistant": "mri"} and cache.modalities == ["ct", "mri"]
    for record in cache.volumes():
        _, label = cache.load(record)
        assert set(np.unique(label)) == {0, 1, 2}  # spleen and aorta are not shared: background
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    assert manifest["version"] == 2 and manifest["complete"] is True


def test_both_orientations_show_the_liver_on_the_same_side(datasets, tmp_path):
    ct, mr = datasets
    cache = preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, margin_mm=2.0, progress=False)
    liver = cache.structure_names.index("Liver") + 1
    sides = {}
    for record in cache.volumes():
        _, label = cache.load(record)
        rows = np.nonzero((label == liver).any(axis=(0, 2)))[0]
        kidney_rows = np.nonzero((label == 1).any(axis=(0, 2)))[0]
        assert cache.plane(record) == "RA"  # rows run to the patient's right
        sides[record.modality] = rows.mean() > kidney_rows.mean()
    assert sides == {"ct": True, "mri": True}  # LPS and LAS files alike: liver (patient's right) at higher rows


def _anterior_offset(cache: SliceCache, modality: str) -> float:
    """Mean column of the liver minus that of the kidney (columns run to anterior in an ``RA`` plane)."""
    offsets = []
    for record in cache.volumes(modality):
        _, label = cache.load(record, mmap=False)
        assert cache.plane(record) == "RA"
        offsets.append(np.nonzero(label == 2)[2].mean() - np.nonzero(label == 1)[2].mean())
    return float(np.mean(offsets))


def test_declared_orientation_overrides_a_wrong_header(tmp_path):
    """A dataset whose headers say LPS for arrays that run LAS (the shared BTCV CT is one) shows its anatomy
    mirrored front to back unless its true orientation is declared."""
    lying = make_dataset(tmp_path / "ct", "CT", CT_LABELS, LAS, "Liver", "left_kidney", stored_affine=LPS)
    mr = make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney")
    trusted = preprocess_nnunet(lying, mr, tmp_path / "trusted", image_size=16, margin_mm=2.0, progress=False)
    fixed = preprocess_nnunet(lying, mr, tmp_path / "fixed", target_orientation="las", image_size=16, margin_mm=2.0,
                              progress=False)
    assert _anterior_offset(fixed, "mri") > 0 and _anterior_offset(fixed, "ct") > 0  # the liver in front, in both
    assert _anterior_offset(trusted, "ct") < 0  # the header's word taken: mirrored
    assert fixed.volumes("ct")[0].extra["declared_orientation"] == "LAS"
    with pytest.raises(ValueError, match="must name one of L/R"):
        preprocess_nnunet(lying, mr, tmp_path / "bad", target_orientation="LLS", progress=False)


@pytest.mark.parametrize(("orientation", "slice_axis"), [(None, 2), ("LAS", 2), ("LAS", 1)])
def test_a_cached_prediction_is_written_back_onto_the_scans_own_grid(tmp_path, orientation, slice_axis):
    """The cached label itself, as one-hot "probabilities", comes back as the label file's own codes and voxels."""
    ct = make_dataset(tmp_path / "ct", "CT", CT_LABELS, LAS, "Liver", "left_kidney", stored_affine=LPS)
    mr = make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney")
    cache = preprocess_nnunet(ct, mr, tmp_path / "cache", target_orientation=orientation, slice_axis=slice_axis,
                              image_size=48, margin_mm=2.0, progress=False)
    spec = DataSpec(tuple(cache.structure_names), tuple(s.codes["ct"] for s in cache.structures), "ct", slice_axis, 2.0)
    record = cache.volumes("ct")[0]
    _, label = cache.load(record, mmap=False)
    probs = torch.nn.functional.one_hot(torch.from_numpy(label).long(), spec.num_classes).permute(0, 3, 1, 2).float()
    written = nib.load(write_cached_prediction(probs, record, spec, tmp_path / "pred.nii.gz"))
    original = nib.load(ct / "labelsTr" / f"{record.subject}.nii.gz")
    assert written.shape == original.shape and np.array_equal(written.affine, original.affine)
    got, want = np.asanyarray(written.dataobj), np.asanyarray(original.dataobj)
    for code in spec.codes:  # 3 left kidney, 6 liver
        overlap = 2 * ((got == code) & (want == code)).sum() / ((got == code).sum() + (want == code).sum())
        assert overlap > 0.9, (code, overlap)


def test_slice_axis_is_the_coarsest_and_can_be_chosen(datasets, tmp_path):
    ct, mr = datasets
    assert coarsest_axis((1.0, 1.0, 3.0)) == 2 and coarsest_axis((3.0, 1.0, 1.0)) == 0
    assert coarsest_axis((2.0, 2.0, 2.0)) == 2  # ties: the last axis
    assert parse_slice_axis("auto") is None and parse_slice_axis("coronal") == 1
    with pytest.raises(ValueError, match="slice axis must be"):
        parse_slice_axis("oblique")
    cache = preprocess_nnunet(ct, mr, tmp_path / "auto", image_size=16, progress=False)
    assert cache.slice_axis == 2  # 4 mm (CT, the target) is the coarsest
    record = cache.volumes("ct")[0]
    assert record.n_slices <= SHAPE[2] and record.spacing[0] == pytest.approx(4.0)
    coronal = preprocess_nnunet(ct, mr, tmp_path / "coronal", slice_axis=1, image_size=16, progress=False)
    record = coronal.volumes("ct")[0]
    assert coronal.slice_axis == 1 and coronal.plane(record) == "RS" and record.spacing[0] == pytest.approx(2.0)


def test_explicit_structures_and_their_errors(datasets, tmp_path):
    ct, mr = datasets
    cache = preprocess_nnunet(ct, mr, tmp_path / "c", structures=["liver"], image_size=16, progress=False)
    assert cache.structure_names == ["Liver"]
    with pytest.raises(InputError, match=r"spleen.*mr/dataset.json|mr/dataset.json.*spleen"):
        preprocess_nnunet(ct, mr, tmp_path / "d", structures=["spleen"], image_size=16, progress=False)
    assert not (tmp_path / "d").exists()  # nothing written before the datasets are known to be usable


def test_undeclared_label_value_names_the_file_and_keeps_what_was_written(tmp_path):
    ct = make_dataset(tmp_path / "ct", "CT", {"left kidney": 3, "liver": 6}, LPS, "liver", "left kidney", extra_value=42)
    mr = make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney")
    with pytest.raises(InputError, match=r"case_002.nii.gz: label values \[42\] are not declared"):
        preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    cache = SliceCache(tmp_path / "cache")
    assert [r.subject for r in cache.volumes()] == ["case_000", "case_001"] and not cache.complete
    with pytest.raises(ValueError, match="incomplete"):
        make_datamodule(tmp_path / "cache", source="cache", image_size=16)
    cache = preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, unknown_labels="background", overwrite=True,
                              progress=False)
    assert cache.complete and len(cache.volumes()) == 6


def test_failed_overwrite_leaves_the_old_cache_usable(datasets, tmp_path):
    ct, mr = datasets
    preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    before = (tmp_path / "cache" / MANIFEST).read_text()
    broken = tmp_path / "ct" / "labelsTr" / "case_001.nii.gz"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match="case_001.nii.gz"):
        preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=32, overwrite=True, progress=False)
    assert (tmp_path / "cache" / MANIFEST).read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []  # no leftovers


def test_other_structures_need_overwrite(datasets, tmp_path):
    ct, mr = datasets
    preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    with pytest.raises(InputError, match="holds structures"):
        preprocess_nnunet(ct, mr, tmp_path / "cache", structures=["liver"], image_size=16, progress=False)


def test_cli_preprocess_reports_errors_with_the_file(tmp_path, capsys):
    assert preprocess_main(["--target", str(tmp_path / "none"), "--assistant", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert str(tmp_path / "none") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        preprocess_main(["--out", str(tmp_path / "o")])  # no datasets


def test_datamodule_follows_the_cache_labels_roles_and_flips(datasets, tmp_path):
    ct, mr = datasets
    preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    dm = make_datamodule(tmp_path / "cache", source="cache", image_size=16)
    assert dm.hparams.target == "ct" and dm.hparams.assistant == "mri"  # the roles it was preprocessed with
    spec = DataSpec.from_dict(dm.data_spec)
    assert spec.structures == ("left_kidney", "Liver") and spec.codes == (3, 6) and spec.num_classes == 3
    assert dm.flip_axes == []  # "left_kidney": a mirrored slice would put it on the wrong side
    swapped = make_datamodule(tmp_path / "cache", source="cache", image_size=16, target="mri", assistant="ct")
    assert DataSpec.from_dict(swapped.data_spec).codes == (3, 1)  # written in the MR dataset's codes
    with pytest.raises(ValueError, match=r"data.target='pet'.*holds modalities"):
        make_datamodule(tmp_path / "cache", source="cache", image_size=16, target="pet")
    phantom = make_datamodule(tmp_path / "p")
    assert phantom.flip_axes == ["LR"] and DataSpec.from_dict(phantom.data_spec).structures[0] == "MYO"


def test_flips_follow_anatomy_not_array_axes():
    assert flip_dims("RA", ["LR"]) == (-2,) and flip_dims("PL", ["LR"]) == (-1,)
    assert flip_dims("RA", ["LR", "AP"]) == (-2, -1) and flip_dims("AS", ["LR"]) == ()
    image = torch.arange(16.0).reshape(1, 4, 4) / 16
    label = (torch.arange(16).reshape(4, 4) % 3).long()
    flipped, flipped_label = random_flip_rotate(image, label, max_degrees=0.0, flip_prob=1.0, dims=(-2,))
    assert torch.equal(flipped_label, label.flip(0))
    assert torch.allclose(flipped, image.flip(1), atol=1e-6)


def test_model_records_the_label_set(tmp_path):
    spec = DataSpec(("liver", "spleen"), (6, 1), "ct", 2, 10.0)
    model = Baseline(**{k: v for k, v in TINY_MODEL.items() if k in ("image_size", "seg_channels", "seg_strides", "seg_res_units", "eval_batch_size")},
                     data_spec=spec.to_dict())
    assert model.num_classes == 3 and model.predict_proba(torch.zeros(1, 1, 32, 32)).shape[1] == 3
    path = tmp_path / "new.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "mkdseg_method": "mkdseg.methods.supervised.Baseline", "pytorch-lightning_version": "2.6.0"}, path)
    assert load_method(path).spec == spec


def test_data_spec_errors_name_the_option():
    with pytest.raises(ValueError, match="model.data_spec: 2 structures but 1 codes"):
        DataSpec(("a", "b"), (1,))
    with pytest.raises(ValueError, match="model.data_spec: codes must be distinct and non-zero"):
        DataSpec(("a", "b"), (1, 1))
    assert DataSpec(("a",), (40000,)).classes_to_codes(np.array([1])).dtype == np.int32
