"""nnU-Net v2 raw datasets: reading, validation, and matching structures by name (mkdseg.data.nnunet)."""

from __future__ import annotations

import json
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest

from mkdseg.data.nifti import InputError, MissingInputError
from mkdseg.data.nnunet import (
    RawCase,
    RawDataset,
    check_dataset_integrity,
    match_structures,
    normalise_name,
    parse_structure_list,
    read_raw_dataset,
)

ABDOMEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "abdomen_chaos_btcv"
LABELS = {"background": 0, "liver": 1, "right kidney": 2, "spleen": 3}


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), path)
    return path


def make_dataset(root: Path, cases=("case_1", "case_2"), labels=None, channel_names=None,
                 file_ending: str = ".nii.gz", drop: str = "", **extra) -> Path:
    """A tiny nnU-Net v2 raw dataset in ``root`` (8x8x4 int16 files).

    ``extra`` adds dataset.json keys, ``drop`` removes one.
    """
    meta = {"channel_names": channel_names or {"0": "CT"}, "labels": labels or LABELS, "file_ending": file_ending,
            "numTraining": len(cases), **extra}
    meta.pop(drop, None)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "imagesTr").mkdir(exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for case in cases:
        _nifti(root / "imagesTr" / f"{case}_0000{file_ending}")
        _nifti(root / "labelsTr" / f"{case}{file_ending}")
    return root


def _raises(root: Path, named: Path, *fragments: str, kind: type = InputError) -> str:
    with pytest.raises(kind) as info:
        read_raw_dataset(root)
    message = str(info.value)
    assert str(named) in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- reading a valid dataset -------------------------------------------------------------------------

def test_reads_cases_labels_and_ending(tmp_path):
    labels = {"spleen": 3, "background": 0, "Right Kidney": 2, "liver": 1}  # declared out of code order
    root = make_dataset(tmp_path / "ds", cases=("case_10", "case_2", "case_1"), labels=labels)
    ds = read_raw_dataset(root)
    assert isinstance(ds, RawDataset)
    assert ds.root == root and ds.file_ending == ".nii.gz" and ds.modality == "ct"
    assert list(ds.labels.items()) == [("liver", 1), ("Right Kidney", 2), ("spleen", 3)]
    assert ds.declared_codes == frozenset({0, 1, 2, 3})
    assert [c.case_id for c in ds.cases] == ["case_1", "case_2", "case_10"]  # natural, not lexical, order
    assert ds.cases[2] == RawCase("case_10", root / "imagesTr" / "case_10_0000.nii.gz",
                                  root / "labelsTr" / "case_10.nii.gz")


@pytest.mark.parametrize("channel, override, expected", [
    ("CT", None, "ct"), ("MRI", None, "mri"), ("T2 SPIR", None, "t2_spir"), ("  T1-w / fat sat ", None, "t1_w_fat_sat"),
    ("MRI", "T2 SPIR", "t2_spir"), ("CT", "mr", "mr"), ("MR", None, "mri"),  # one cache name for MR (the phantom's)
])
def test_modality_is_normalised_and_can_be_overridden(tmp_path, channel, override, expected):
    root = make_dataset(tmp_path / "ds", channel_names={"0": channel})
    assert read_raw_dataset(root, modality=override).modality == expected


def test_modality_override_without_letters_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        read_raw_dataset(make_dataset(tmp_path / "ds"), modality=" - ")


def test_plain_nii_ending_ignores_gz_files(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a",), file_ending=".nii")
    _nifti(root / "imagesTr" / "b_0000.nii.gz")  # another ending: not part of this dataset
    ds = read_raw_dataset(root)
    assert [(c.case_id, c.image.name, c.label.name) for c in ds.cases] == [("a", "a_0000.nii", "a.nii")]


def test_ignores_hidden_and_foreign_files(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a",))
    _nifti(root / "imagesTr" / "._b_0000.nii.gz")  # macOS resource fork: hidden, matches the pattern
    _nifti(root / "labelsTr" / ".c.nii.gz")
    _nifti(root / "imagesTr" / "d_000.nii.gz")  # 3 digits: not <case>_<4 digits>
    (root / "imagesTr" / "notes.txt").write_text("x")
    (root / "labelsTr" / "e.nii.gz.bak").write_text("x")
    (root / "imagesTr" / "sub_0000.nii.gz").mkdir()  # a folder, not a file
    assert [c.case_id for c in read_raw_dataset(root).cases] == ["a"]


def test_num_training_different_from_the_files_is_tolerated(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a", "b", "c"), numTraining=7)
    assert len(read_raw_dataset(root).cases) == 3


@pytest.mark.parametrize("name, key", [
    ("Right Kidney", "right kidney"), ("right_kidney", "right kidney"), ("right  kidney", "right kidney"),
    (" RIGHT-kidney\t", "right kidney"), ("liver", "liver"),
    ("Portal Vein and Splenic_Vein", "portal vein and splenic vein"),
])
def test_normalise_name(name, key):
    assert normalise_name(name) == key


def test_code_of_matches_normalised_names_and_lists_labels_when_absent(tmp_path):
    root = make_dataset(tmp_path / "ds")
    ds = read_raw_dataset(root)
    assert ds.code_of("Right_Kidney") == 2 and ds.code_of("SPLEEN") == 3
    with pytest.raises(InputError) as info:
        ds.code_of("pancreas")
    message = str(info.value)
    assert str(root / "dataset.json") in message and "'pancreas'" in message
    assert all(f"'{name}'" in message for name in ("liver", "right kidney", "spleen"))


# --- invalid datasets: each error names the file or folder --------------------------------------------

def test_missing_folder_and_not_a_folder(tmp_path):
    _raises(tmp_path / "nowhere", tmp_path / "nowhere", "not found", kind=MissingInputError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError) as info:
        read_raw_dataset(tmp_path / "file")
    assert f"{tmp_path / 'file'}: not a folder" in str(info.value)
    assert not isinstance(info.value, FileNotFoundError)  # it exists, it is just the wrong kind


def test_missing_dataset_json(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "dataset.json").unlink()
    _raises(root, root / "dataset.json", "not found", kind=MissingInputError)


@pytest.mark.parametrize("text, fragment", [
    ('{\n  "labels": {"background": 0,}\n}', "line 2 column 30"),  # the JSON error position
    ('{\n"labels": 1,\n"labels": 2}', "twice"),  # a duplicated key would silently keep the last
    ('[1, 2]', "JSON object"),
    ('"x"', "JSON object"),
])
def test_unreadable_dataset_json(tmp_path, text, fragment):
    root = make_dataset(tmp_path / "ds")
    (root / "dataset.json").write_text(text)
    _raises(root, root / "dataset.json", fragment)


def test_dataset_json_not_utf8(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "dataset.json").write_bytes(b'{"name": "\xff"}')
    _raises(root, root / "dataset.json", "UnicodeDecodeError")


@pytest.mark.parametrize("key", ["labels", "file_ending", "channel_names"])
def test_missing_required_key(tmp_path, key):
    root = make_dataset(tmp_path / "ds", drop=key)
    message = _raises(root, root / "dataset.json", key, "missing")
    assert "InputError" not in message


@pytest.mark.parametrize("labels, fragments", [
    (["background", "liver"], ["'labels' must map"]),
    ({"background": 0, "liver": [1, 2]}, ["region-based labels are not supported", "'liver'"]),
    ({"background": 0, "liver": "1"}, ["'liver'", "integers"]),
    ({"background": 0, "liver": 1.0}, ["'liver'", "integers"]),
    ({"background": 0, "liver": True}, ["'liver'", "integers"]),
    ({"background": 0, "liver": -1}, ["'liver'", "integers"]),
    ({"background": 0, "liver": 1, "spleen": 1}, ["'liver' and 'spleen' both have code 1"]),
    ({"background": 0, "right kidney": 1, "Right_Kidney": 2}, ["'right kidney' and 'Right_Kidney'", "same name"]),
    ({"background": 0, " ": 1}, ["empty name"]),
    ({"liver": 1, "spleen": 2}, ['"background": 0', "nnU-Net requires"]),
    ({"background": 1, "liver": 2}, ['"background": 0']),
    ({"bg": 0, "liver": 1}, ['"background": 0']),
])
def test_invalid_labels(tmp_path, labels, fragments):
    root = make_dataset(tmp_path / "ds", labels=labels)
    _raises(root, root / "dataset.json", *fragments)


@pytest.mark.parametrize("ending", [".mha", ".nrrd", ".png", "nii.gz", ".NII.GZ"])
def test_non_nifti_file_ending(tmp_path, ending):
    root = make_dataset(tmp_path / "ds", cases=(), file_ending=ending)
    _raises(root, root / "dataset.json", "only NIfTI", repr(ending))


@pytest.mark.parametrize("channels, fragment", [
    ({"0": "T1", "1": "T2"}, "multi-channel input is not supported"),
    ({"1": "CT"}, 'channel "0"'),
    ({"0": ""}, 'channel "0"'),
    ({"0": 3}, 'channel "0"'),
    ({}, "channel_names"),
    ("CT", "channel_names"),
])
def test_invalid_channel_names(tmp_path, channels, fragment):
    root = make_dataset(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = channels
    (root / "dataset.json").write_text(json.dumps(meta))
    _raises(root, root / "dataset.json", fragment)


def test_second_channel_file_is_multi_channel(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a", "b"))
    extra = _nifti(root / "imagesTr" / "b_0001.nii.gz")
    message = _raises(root, extra, "multi-channel input is not supported")
    assert str(root / "dataset.json") in message


def test_image_without_label(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a", "b"))
    image = _nifti(root / "imagesTr" / "c_0000.nii.gz")
    message = _raises(root, image, "no matching label", kind=MissingInputError)
    assert f"expected {root / 'labelsTr' / 'c.nii.gz'}" in message


def test_label_without_image(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a",))
    label = _nifti(root / "labelsTr" / "z.nii.gz")
    _nifti(root / "labelsTr" / "y.nii.gz")
    message = _raises(root, label.with_name("y.nii.gz"), "no matching image", kind=MissingInputError)
    assert f"expected {root / 'imagesTr' / 'y_0000.nii.gz'}" in message and "1 more" in message


@pytest.mark.parametrize("folder", ["imagesTr", "labelsTr"])
def test_missing_images_or_labels_folder(tmp_path, folder):
    root = make_dataset(tmp_path / "ds")
    for path in (root / folder).iterdir():
        path.unlink()
    (root / folder).rmdir()
    _raises(root, root / folder, "folder not found", kind=MissingInputError)


def test_no_cases(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=())
    message = _raises(root, root / "imagesTr", "no cases")
    assert "ignored" not in message


def test_no_cases_hints_at_images_without_channel_suffix(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=())
    _nifti(root / "imagesTr" / "a.nii.gz")
    _raises(root, root / "imagesTr", "no cases", "a.nii.gz", "_0000")


def test_original_codes_are_read_and_checked(tmp_path):
    root = make_dataset(tmp_path / "ds", original_codes={"liver": 205, "Spleen": 420})
    ds = read_raw_dataset(root)
    assert ds.original_codes == {"liver": 205, "Spleen": 420}
    assert ds.original_code_of("spleen") == 420 and ds.original_code_of("right kidney") is None
    make_dataset(tmp_path / "bad", original_codes={"heart": 205})
    _raises(tmp_path / "bad", tmp_path / "bad" / "dataset.json", "'original_codes' names 'heart'")
    make_dataset(tmp_path / "twice", original_codes={"liver": 205, "spleen": 205})
    _raises(tmp_path / "twice", tmp_path / "twice" / "dataset.json", "the same code")


# --- nnU-Net v2's integrity rules ----------------------------------------------------------------------

def test_integrity_of_a_valid_dataset_with_two_channels(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=("a", "b", "c"), channel_names={"0": "T1 in", "1": "T1 out"})
    for case in ("a", "b", "c"):
        _nifti(root / "imagesTr" / f"{case}_0001.nii.gz")
    assert check_dataset_integrity(root) == 3


def _label(path: Path, value: int = 0, shape=(8, 8, 4), affine=np.eye(4)) -> Path:
    nib.save(nib.Nifti1Image(np.full(shape, value, np.uint8), affine), path)
    return path


@pytest.mark.parametrize("problem", ["labels", "numTraining", "no numTraining", "missing channel", "extra channel",
                                     "no label", "no image", "ending", "image name", "shape", "affine", "value", "nan"])
def test_integrity_names_the_file_or_key_of_each_broken_rule(tmp_path, problem):
    root = make_dataset(tmp_path / "ds", cases=("a", "b"), drop="numTraining" if problem == "no numTraining" else "",
                        **({"numTraining": 3} if problem == "numTraining" else {}),
                        labels={"background": 0, "liver": 1, "spleen": 3} if problem == "labels" else None,
                        channel_names={"0": "T1", "1": "T2"} if problem == "missing channel" else None)
    images, labels, meta = root / "imagesTr", root / "labelsTr", root / "dataset.json"
    if problem == "nan":
        nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)), images / "b_0000.nii.gz")
    breaks = {  # each makes its problem (only when called) and says which file or key the message must name
        "labels": lambda: (meta, "label codes [0, 1, 3] are not consecutive"),
        "numTraining": lambda: (meta, "numTraining is 3, the dataset has 2 cases"),
        "no numTraining": lambda: (meta, "missing required key numTraining"),
        "missing channel": lambda: (images / "a_0001.nii.gz", "missing"),
        "extra channel": lambda: (_nifti(images / "b_0001.nii.gz"), "channel 0001"),
        "no label": lambda: (_nifti(images / "c_0000.nii.gz") and labels / "c.nii.gz", "missing, the label of"),
        "no image": lambda: (_label(labels / "d.nii.gz"), "no image d_0000.nii.gz"),
        "ending": lambda: (_nifti(labels / "c.nii"), "does not end with the file_ending '.nii.gz'"),
        "image name": lambda: (_nifti(images / "c.nii.gz"), "not named <case>_<4-digit channel>.nii.gz"),
        "shape": lambda: (_label(labels / "b.nii.gz", shape=(8, 8, 3)), "label shape (8, 8, 3) differs"),
        "affine": lambda: (_label(labels / "b.nii.gz", affine=np.diag([2.0, 1, 1, 1])), "label affine differs"),
        "value": lambda: (_label(labels / "b.nii.gz", value=7), "label values [7] are not declared"),
        "nan": lambda: (images / "b_0000.nii.gz", "NaN"),
    }
    named, fragment = breaks[problem]()
    with pytest.raises(InputError) as info:
        check_dataset_integrity(root)
    assert str(named) in str(info.value) and fragment in str(info.value)


# --- matching structures across datasets ---------------------------------------------------------------

@pytest.fixture
def pair(tmp_path) -> tuple[RawDataset, RawDataset]:
    target = make_dataset(tmp_path / "target", labels={"background": 0, "Spleen": 1, "Right_Kidney": 2,
                                                       "gallbladder": 3, "liver": 4})
    assistant = make_dataset(tmp_path / "assistant", labels={"background": 0, "liver": 1, "right kidney": 2,
                                                             "spleen": 3, "heart": 4})
    return read_raw_dataset(target), read_raw_dataset(assistant)


def test_match_all_shared_in_target_order_and_spelling(pair):
    target, assistant = pair
    assert match_structures(target, assistant) == ["Spleen", "Right_Kidney", "liver"]
    assert match_structures(assistant, target) == ["liver", "right kidney", "spleen"]


def test_match_given_names_keeps_order(pair):
    target, assistant = pair
    assert match_structures(target, assistant, ["LIVER", "right kidney"]) == ["liver", "Right_Kidney"]
    assert match_structures(target, assistant, ("spleen",)) == ["Spleen"]


@pytest.mark.parametrize("name, side", [("gallbladder", "assistant"), ("heart", "target"), ("pancreas", "target")])
def test_match_name_missing_from_one_dataset(pair, name, side):
    target, assistant = pair
    lacking = target if side == "target" else assistant
    with pytest.raises(InputError) as info:
        match_structures(target, assistant, ["liver", name])
    message = str(info.value)
    assert str(lacking.root / "dataset.json") in message and repr(name) in message
    assert all(repr(label) in message for label in lacking.labels)


def test_match_duplicate_names(pair):
    with pytest.raises(InputError, match="same structure twice"):
        match_structures(*pair, ["liver", "Spleen", "LIVER"])


@pytest.mark.parametrize("names", [[], (), "liver"])
def test_match_names_must_be_a_non_empty_list(pair, names):
    with pytest.raises(ValueError, match="non-empty list"):
        match_structures(*pair, names)


def test_match_nothing_shared(tmp_path):
    a = read_raw_dataset(make_dataset(tmp_path / "a", labels={"background": 0, "liver": 1}))
    b = read_raw_dataset(make_dataset(tmp_path / "b", labels={"background": 0, "heart": 1, "aorta": 2}))
    with pytest.raises(InputError) as info:
        match_structures(a, b)
    message = str(info.value)
    assert str(tmp_path / "a" / "dataset.json") in message and str(tmp_path / "b" / "dataset.json") in message
    assert all(f"'{name}'" in message for name in ("liver", "heart", "aorta"))


@pytest.mark.parametrize("text, names", [
    ("liver, right kidney,spleen", ["liver", "right kidney", "spleen"]),
    ("liver", ["liver"]),
    ("  Right Kidney ,left_kidney", ["Right Kidney", "left_kidney"]),
])
def test_parse_structure_list(text, names):
    assert parse_structure_list(text) == names


@pytest.mark.parametrize("text", ["", "liver,,spleen", "liver,", " , ", ",liver"])
def test_parse_structure_list_rejects_empty_items(text):
    with pytest.raises(ValueError, match="empty item"):
        parse_structure_list(text)


# --- the real shared datasets ---------------------------------------------------------------------------

real = pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"real nnU-Net datasets not found at {ABDOMEN}")


@pytest.fixture(scope="module")
def abdomen() -> tuple[RawDataset, RawDataset]:
    return read_raw_dataset(ABDOMEN / "ct_btcv"), read_raw_dataset(ABDOMEN / "mr_chaos")


@real
def test_real_datasets_read(abdomen):
    ct, mr = abdomen
    assert (len(ct.cases), len(mr.cases)) == (30, 20)
    assert (ct.modality, mr.modality) == ("ct", "mri")
    assert len(ct.labels) == 13 and ct.declared_codes == frozenset(range(14))
    assert mr.labels == {"liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}
    for ds in abdomen:
        assert all(c.image.is_file() and c.label.is_file() for c in ds.cases)
        assert all(c.image.name == f"{c.case_id}_0000.nii.gz" for c in ds.cases)
        ids = [c.case_id for c in ds.cases]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


@real
def test_real_datasets_pass_nnunets_integrity_rules():
    assert check_dataset_integrity(ABDOMEN / "mr_chaos", read_images=False) == 20


@real
def test_real_match_structures(abdomen):
    ct, mr = abdomen
    shared = match_structures(ct, mr)
    assert shared == ["spleen", "right kidney", "left kidney", "liver"]
    assert [ct.code_of(n) for n in shared] == [1, 2, 3, 6]
    assert [mr.code_of(n) for n in shared] == [4, 2, 3, 1]
    assert match_structures(ct, mr, names=["Liver", "spleen"]) == ["liver", "spleen"]
    with pytest.raises(InputError) as info:
        match_structures(ct, mr, names=["pancreas"])
    message = str(info.value)
    assert str(ABDOMEN / "mr_chaos" / "dataset.json") in message
    assert all(repr(name) in message for name in ("liver", "right kidney", "left kidney", "spleen"))
