"""Inference as nnU-Net's users expect it: ensembles of checkpoints, test-time mirroring (with left/right
structures swapped by name), post-processing by connected components decided on validation and stored in
the checkpoint, and the class probabilities written beside the label map."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import mkdseg.methods
from mkdseg import postprocess
from mkdseg.data.nifti import load_image, to_canonical
from mkdseg.inference import SlicePredictor, probabilities_path, segment_file, segment_main
from mkdseg.inference.cli import ensemble_decision
from mkdseg.labels import DataSpec
from mkdseg.methods import Baseline, load_method
from mkdseg.mirroring import Mirroring, lateral_partners, mirrored_mean, parse_axes

from conftest import make_datamodule, quiet_trainer
from test_inference import SPEC, ThresholdSegmentor, blob_scan, dice

KIDNEYS = DataSpec(("spleen", "right kidney", "left kidney"), (1, 2, 3), field_of_view="body")


class SideSegmentor(ThresholdSegmentor):
    """Calls bright pixels ``right kidney`` in the upper half of the rows and ``left kidney`` in the lower half:
    a network that tells left from right by position alone (as one trained without left-right flips may). The
    rows of a canonical transverse slice (plane ``RA``) run along left-right."""

    def __init__(self, image_size: int = 32, threshold: float = 0.3):
        super().__init__(image_size, cls=2, threshold=threshold, spec=KIDNEYS)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        hit = torch.sigmoid((x[:, 0] - self.hparams.threshold) * 50)
        upper = (torch.arange(x.shape[2]) < x.shape[2] // 2)[None, :, None]
        probs = torch.zeros(x.shape[0], self.num_classes, *x.shape[2:])
        probs[:, 0], probs[:, 2], probs[:, 3] = 1 - hit, hit * upper, hit * ~upper
        return probs


def use_models(monkeypatch, tmp_path, models: dict):
    """``--ckpt <name>.ckpt`` restores ``models[name]``; returns ``{name: path}``."""
    paths = {}
    for name in models:
        paths[name] = tmp_path / f"{name}.ckpt"
        paths[name].write_bytes(b"stand-in")
    by_path = {str(paths[n]): m for n, m in models.items()}
    monkeypatch.setattr(mkdseg.methods.loading, "load_method", lambda path, map_location="cpu": by_path[str(path)], raising=False)
    return paths


def written(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


# -- one implementation of "probabilities of a batch of slices" ----------------------------------------------

def test_one_checkpoint_without_options_is_exactly_predict_proba():
    model = ThresholdSegmentor(32)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert torch.equal(SlicePredictor(model, 32)(x), model.predict_proba(x).float())
    assert torch.equal(SlicePredictor([model], 32, mirroring=Mirroring())(x), model.predict_proba(x).float())


def test_one_checkpoint_segments_bit_identically_to_predict_proba_alone(tmp_path, monkeypatch):
    """`segment --ckpt A` writes exactly what the predictor that called predict_proba alone wrote."""
    scan, _ = blob_scan("LPS")
    nib.save(scan, tmp_path / "scan.nii.gz")

    class PredictProbaAlone:  # SlicePredictor before ensembles and mirroring
        def __init__(self, model, image_size):
            self.model, self.image_size = model, image_size

        def __call__(self, x):
            return self.model.predict_proba(x).float().cpu()

    segment_file(tmp_path / "scan.nii.gz", tmp_path / "alone.nii.gz", PredictProbaAlone(ThresholdSegmentor(32), 32), SPEC)
    paths = use_models(monkeypatch, tmp_path, {"a": ThresholdSegmentor(32)})
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "one.nii.gz"), "--ckpt", str(paths["a"]),
                         "--no-progress", "--device", "cpu", "--precision", "fp32"]) == 0
    assert np.array_equal(written(tmp_path / "one.nii.gz"), written(tmp_path / "alone.nii.gz"))


# -- ensembles ----------------------------------------------------------------------------------------------

def test_ensemble_averages_probabilities_and_of_one_model_twice_equals_it():
    a, b = ThresholdSegmentor(32, threshold=0.0), ThresholdSegmentor(32, threshold=0.6)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(SlicePredictor([a, a], 32)(x), SlicePredictor(a, 32)(x))
    assert torch.allclose(SlicePredictor([a, b], 32)(x), (a.predict_proba(x) + b.predict_proba(x)) / 2)


def test_segment_with_the_same_checkpoint_twice_writes_what_one_writes(tmp_path, monkeypatch):
    scan, blob = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    model = ThresholdSegmentor(32)
    paths = use_models(monkeypatch, tmp_path, {"a": model, "b": model})
    base = ["-i", str(tmp_path / "scan.nii.gz"), "--no-progress", "--device", "cpu"]
    assert segment_main(base + ["-o", str(tmp_path / "one.nii.gz"), "--ckpt", str(paths["a"])]) == 0
    assert segment_main(base + ["-o", str(tmp_path / "two.nii.gz"), "--ckpt", str(paths["a"]), str(paths["b"])]) == 0
    assert np.array_equal(written(tmp_path / "one.nii.gz"), written(tmp_path / "two.nii.gz"))
    assert dice(written(tmp_path / "two.nii.gz") == 500, blob) > 0.9


@pytest.mark.parametrize("other", ["structures", "codes", "slicing", "image_size"])
def test_checkpoints_that_cannot_be_ensembled_are_named(tmp_path, monkeypatch, capsys, other):
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    four = DataSpec(("spleen", "right kidney", "left kidney", "liver"), (1, 2, 3, 6))
    odd = {"structures": DataSpec(("spleen", "right kidney", "left kidney", "gallbladder"), (1, 2, 3, 4)),
           "codes": DataSpec(four.structures, (1, 2, 3, 7)), "slicing": DataSpec(four.structures, four.codes, slice_axis=0),
           "image_size": four}[other]
    paths = use_models(monkeypatch, tmp_path, {"fold0": ThresholdSegmentor(32, spec=four),
                                              "fold1": ThresholdSegmentor(32, spec=four),
                                              "odd": ThresholdSegmentor(64 if other == "image_size" else 32, spec=odd)})
    assert segment_main(["-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--no-progress",
                         "--ckpt", str(paths["fold0"]), str(paths["fold1"]), str(paths["odd"])]) == 1
    err = capsys.readouterr().err
    assert str(paths["odd"]) in err and "fold0.ckpt" in err and "fold1.ckpt" not in err.split("cannot")[0]
    assert {"structures": "gallbladder", "codes": "7", "slicing": "axis", "image_size": "slice size"}[other] in err
    assert not (tmp_path / "seg.nii.gz").exists()


# -- test-time mirroring ------------------------------------------------------------------------------------

def test_lateral_pairs_are_found_by_name():
    assert lateral_partners(["right kidney", "Left Kidney", "liver"]) == [0, 2, 1, 3]
    assert lateral_partners(["Kidney_Left", "Kidney_Right", "left lung"]) == [0, 2, 1, 3]  # "left lung": no partner
    assert lateral_partners(["leftover", "bright spot", "MYO"]) == [0, 1, 2, 3]  # words containing a side are no side


def test_mirror_axes_follow_the_slice_layout():
    structures = KIDNEYS.structures
    assert Mirroring.of("RA", ["LR"], structures).passes == (((), None), ((-2,), (0, 1, 3, 2)))
    assert Mirroring.of("PL", ["LR"], structures).passes == (((), None), ((-1,), (0, 1, 3, 2)))  # the phantom's layout
    assert Mirroring.of("RA", ["AP"], structures).passes == (((), None), ((-1,), None))  # no midline crossed
    assert Mirroring.of("RA", ["SI"], structures).passes == (((), None),)  # perpendicular to the slices
    assert Mirroring.of("RA", ["LR"], structures, swap_lateral=False).passes[1] == ((-2,), None)
    assert len(Mirroring.of("RA", ["LR", "AP"], structures).passes) == 4  # every combination, as nnU-Net
    assert parse_axes("lr, ap") == ("LR", "AP") and parse_axes("none") == ()
    with pytest.raises(ValueError, match="XY"):
        parse_axes("XY")


def test_mirroring_an_lr_symmetric_body_swaps_left_and_right_structures():
    """Two kidneys placed symmetrically: the position-reading network labels each mirror image's kidneys by side,
    so a mirrored pass, mirrored back, calls the right kidney left. With the swap the mean is the plain
    prediction; without it each kidney is half right, half left."""
    model = SideSegmentor(32)
    x = torch.full((1, 1, 32, 32), -1.0)
    x[:, :, 4:10, 12:20] = 1.0  # the right kidney (upper rows)
    x[:, :, 22:28, 12:20] = 1.0  # the left kidney, its mirror image across the midline
    plain = model.predict_proba(x)
    swapped = mirrored_mean(lambda v: {"p": model.predict_proba(v)}, x, Mirroring.of("RA", ["LR"], KIDNEYS.structures))["p"]
    assert torch.allclose(swapped, plain, atol=1e-6)
    unswapped = mirrored_mean(lambda v: {"p": model.predict_proba(v)}, x,
                              Mirroring.of("RA", ["LR"], KIDNEYS.structures, swap_lateral=False))["p"]
    assert torch.allclose(unswapped[0, 2, 6, 15], unswapped[0, 3, 6, 15]) and abs(float(unswapped[0, 2, 6, 15]) - 0.5) < 0.01


def test_segment_mirror_lr_keeps_each_kidney_on_its_side(tmp_path, monkeypatch):
    """End to end through the scan's reorientation to canonical RAS: a scan stored LPS, a kidney on one side."""
    scan, blob = blob_scan("LPS")
    nib.save(scan, tmp_path / "scan.nii.gz")
    paths = use_models(monkeypatch, tmp_path, {"a": SideSegmentor(32)})
    base = ["-i", str(tmp_path / "scan.nii.gz"), "--ckpt", str(paths["a"]), "--no-progress", "--codes", "index"]
    assert segment_main(base + ["-o", str(tmp_path / "plain.nii.gz")]) == 0
    assert segment_main(base + ["-o", str(tmp_path / "mirrored.nii.gz"), "--mirror", "LR"]) == 0
    plain, mirrored = written(tmp_path / "plain.nii.gz"), written(tmp_path / "mirrored.nii.gz")
    side = int(np.bincount(plain[blob]).argmax())
    assert side in (2, 3) and dice(plain == side, blob) > 0.8
    assert np.array_equal(mirrored, plain)  # the network is exactly left-right symmetric once the sides are swapped
    assert segment_main(base + ["-o", str(tmp_path / "bad.nii.gz"), "--mirror", "up"]) == 2


def test_model_test_mirror_uses_the_same_mirroring(phantom_root):
    model = Baseline(image_size=32, seg_channels=(4, 8), seg_strides=(2,), eval_batch_size=4).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert model.mirroring() is None and torch.equal(model.evaluation_components(x)["seg"], model.predict_proba(x))
    model.test_mirror = ("LR",)
    expected = (model.predict_proba(x) + model.predict_proba(x.flip(-1)).flip(-1)) / 2  # phantom slices: plane PL
    assert torch.allclose(model.evaluation_components(x, "PL")["seg"], expected, atol=1e-6)


# -- post-processing ----------------------------------------------------------------------------------------

def _two_structures_with_strays() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[1:5, 1:5, 1:5] = 1
    truth[7:11, 7:11, 7:11] = 2
    pred = truth.copy()
    pred[10, 1, 1] = 1  # a stray voxel of structure 1: wrong
    pred[1, 10, 10] = 2  # a detached piece of structure 2 ...
    truth[1, 10, 10] = 2  # ... that is right
    return pred, truth


def test_keep_largest_removes_strays_only_of_the_decided_structures():
    pred, _ = _two_structures_with_strays()
    kept = postprocess.keep_largest(pred, [1])
    assert kept[10, 1, 1] == 0 and kept[1, 10, 10] == 2 and (kept[1:5, 1:5, 1:5] == 1).all()
    assert np.array_equal(postprocess.keep_largest(pred, []), pred) and pred[10, 1, 1] == 1  # input untouched
    assert np.array_equal(postprocess.largest_component(pred == 2), postprocess.keep_largest(pred, [2]) == 2)


def test_decision_keeps_largest_only_where_validation_dice_rises():
    from mkdseg.metrics import volume_scores

    pred, truth = _two_structures_with_strays()
    rows = lambda labels: [{"predictor": "seg", "subject": "s1", "structure": k, **v}  # noqa: E731
                           for k, v in volume_scores(labels, truth, ["a", "b"]).items()]
    plain, largest = rows(pred), rows(postprocess.keep_largest(pred, [1, 2]))
    assert postprocess.decide(plain, largest) == {"seg": ["a"]}
    chosen = postprocess.apply_decision(plain, largest, {"seg": ["a"]})
    assert [r["dice"] for r in chosen] == [1.0, 1.0]
    assert postprocess.decide(plain, plain) == {"seg": []}  # a tie changes nothing


def test_validation_decides_and_the_checkpoint_holds_the_decision(tmp_path, phantom_root):
    """The best checkpoint, saved right after its validation, holds the decision made on its own weights;
    load_method restores it; a checkpoint without one (older ones) post-processes nothing."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/dice", mode="max", filename="best-{step}")
    trainer = quiet_trainer(max_steps=2, callbacks=[checkpoint], enable_checkpointing=True, limit_val_batches=1.0,
                            val_check_interval=2, check_val_every_n_epoch=None)
    model = Baseline(image_size=32, seg_channels=(4, 8), seg_strides=(2,), eval_batch_size=8)
    trainer.fit(model, datamodule=make_datamodule(phantom_root, samples_per_epoch=4, n_val=1))
    decision = model.postprocessing
    assert decision["step"] == 2 and set(decision["keep_largest"]) == {"seg"} and decision["subjects"]
    assert set(decision["dice"]["seg"]) <= set(model.spec.structures)
    assert "val/dice_postprocessed" in trainer.callback_metrics
    saved = torch.load(tmp_path / "best-step=2.ckpt", weights_only=False)
    assert saved[postprocess.CHECKPOINT_KEY] == decision
    assert load_method(tmp_path / "best-step=2.ckpt").postprocessing == decision
    del saved[postprocess.CHECKPOINT_KEY]
    torch.save(saved, tmp_path / "old.ckpt")
    old = load_method(tmp_path / "old.ckpt")
    assert old.postprocessing is None and old.postprocessing_classes() == []


def test_test_stage_applies_the_stored_decision(monkeypatch):
    pred, truth = _two_structures_with_strays()
    spec = DataSpec(("a", "b"), (1, 2))
    model = Baseline(image_size=32, data_spec=spec.to_dict(), seg_channels=(4, 8), seg_strides=(2,))
    monkeypatch.setattr(model, "predict_volume", lambda image, plane=None: {"seg": torch.from_numpy(pred)})
    batch = {"image": torch.zeros(12, 1, 32, 32), "label": torch.from_numpy(truth), "spacing": torch.ones(3),
             "subject": "s1"}
    dice_of = {}
    for name, decision in (("none", None), ("a", {"keep_largest": {"seg": ["a"]}}), ("both", {"keep_largest": {"seg": ["a", "b"]}})):
        model.postprocessing, model._eval_rows = decision, []
        model._evaluate(batch, with_assd=False, stage="test")
        dice_of[name] = {r["structure"]: r["dice"] for r in model._eval_rows}
    assert dice_of["none"]["a"] < 1.0 and dice_of["a"] == {"a": 1.0, "b": 1.0} and dice_of["both"]["b"] < 1.0
    model.postprocess_in_test, model._eval_rows = False, []
    model._evaluate(batch, with_assd=False, stage="test")
    assert {r["structure"]: r["dice"] for r in model._eval_rows} == dice_of["none"]


def test_segment_applies_the_checkpoints_decision_unless_told_not_to(tmp_path, monkeypatch, capsys):
    scan, blob = blob_scan()
    data = np.asarray(scan.dataobj).copy()
    data[2:5, 2:5, 3:6] = 1000  # a bright speck far from the blob: a stray component of the same class
    nib.save(nib.Nifti1Image(data, scan.affine), tmp_path / "scan.nii.gz")
    model = ThresholdSegmentor(64)
    model.postprocessing = {"keep_largest": {"seg": ["LV"]}}
    paths = use_models(monkeypatch, tmp_path, {"a": model})
    base = ["-i", str(tmp_path / "scan.nii.gz"), "--ckpt", str(paths["a"]), "--no-progress", "--no-crop"]
    assert segment_main(base + ["-o", str(tmp_path / "pp.nii.gz")]) == 0
    assert "largest connected component of LV" in capsys.readouterr().out
    assert segment_main(base + ["-o", str(tmp_path / "raw.nii.gz"), "--no-postprocess"]) == 0
    pp, raw = written(tmp_path / "pp.nii.gz") == 500, written(tmp_path / "raw.nii.gz") == 500
    assert raw[2:5, 2:5, 3:6].any() and not pp[2:5, 2:5, 3:6].any()
    assert np.array_equal(pp, postprocess.largest_component(raw)) and dice(pp, blob) > 0.9


def test_an_ensemble_keeps_largest_only_where_every_member_decided_so():
    class Member:
        primary_predictor = "seg"

        def __init__(self, keep):
            self.postprocessing = None if keep is None else {"keep_largest": {"seg": keep, "teacher": ["x"]}}

    assert ensemble_decision([Member(["liver", "spleen"]), Member(["spleen"])]) == ["spleen"]
    assert ensemble_decision([Member(["liver"]), Member(None)]) == []
    assert ensemble_decision([Member(["liver"])]) == ["liver"]


# -- probabilities beside the label map -----------------------------------------------------------------------

def test_save_probabilities_writes_the_scans_axes_float16_summing_to_one(tmp_path, monkeypatch):
    scan, _ = blob_scan("PIR")
    nib.save(scan, tmp_path / "scan.nii.gz")
    a, b = ThresholdSegmentor(32, threshold=0.2), ThresholdSegmentor(32, threshold=0.4)
    paths = use_models(monkeypatch, tmp_path, {"a": a, "b": b})
    out = tmp_path / "segs" / "scan.nii.gz"
    args = ["-i", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--ckpt", str(paths["a"]), str(paths["b"]),
            "--no-progress", "--save-probabilities", "--no-postprocess"]
    assert segment_main(args) == 0
    saved = np.load(probabilities_path(out))
    probs, labels = saved["probabilities"], written(out)
    assert probs.dtype == np.float16 and probs.shape == (SPEC.num_classes, *scan.shape)
    assert np.allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
    assert list(saved["classes"]) == ["background", *SPEC.structures] and list(saved["codes"]) == [0, *SPEC.codes]
    agree = saved["codes"][probs.astype(np.float32).argmax(0)] == labels
    assert agree.mean() > 0.999  # float16 ties aside, the label map is the probabilities' argmax
    assert 0.4 < float(probs[3].max()) <= 1.0 and (probs[3][labels == 500] > 0.4).all()  # the ensemble's mean
    assert sorted(p.name for p in out.parent.iterdir()) == ["scan.nii.gz", "scan.npz"]  # no temporary files left
    assert segment_main(args) == 1  # both exist: refused without --overwrite
    assert segment_main(args + ["--overwrite"]) == 0


def test_without_save_probabilities_no_canvas_is_made(tmp_path, monkeypatch):
    scan, _ = blob_scan()
    nib.save(scan, tmp_path / "scan.nii.gz")
    made = []
    real_zeros = np.zeros
    monkeypatch.setattr(np, "zeros", lambda shape, *a, **k: made.append(np.dtype(k.get("dtype", float))) or
                        real_zeros(shape, *a, **k))
    segment_file(tmp_path / "scan.nii.gz", tmp_path / "seg.nii.gz", SlicePredictor(ThresholdSegmentor(32), 32), SPEC)
    assert np.dtype(np.float16) not in made and not probabilities_path(tmp_path / "seg.nii.gz").exists()
    image, geometry = load_image(tmp_path / "scan.nii.gz")
    assert to_canonical(image, geometry).shape == written(tmp_path / "seg.nii.gz").shape


# -- the benchmark that measures these options (benchmarks/inference_options.py), at a tiny size ---------------

def _tiny_run(run, cache, seed: int, data_spec: dict) -> None:
    """A run folder as `mkdseg compare` writes it: config.yaml and a best and a last checkpoint (other weights)."""
    import lightning as L
    import yaml

    from mkdseg.methods.base import METHOD_KEY

    folder = run / "logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"source": "cache", "root": str(cache), "n_folds": 2, "fold": 0,
                                                              "split_seed": 0, "n_val": 1}}))
    for name, offset in (("best-step=1.ckpt", 0), ("last.ckpt", 1)):
        torch.manual_seed(seed + offset)
        model = Baseline(image_size=16, data_spec=data_spec, seg_channels=(4, 8), seg_strides=(2,), eval_batch_size=8)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                    "pytorch-lightning_version": L.__version__, METHOD_KEY: "mkdseg.methods.supervised.Baseline"}, folder / name)


def test_inference_options_benchmark_scores_every_option_on_validation_and_test(tmp_path, capsys):
    """Two runs of fold 0 on toy nnU-Net datasets: each option's Dice on the fold's validation and test scans,
    segmented whole and scored against their label files, and its seconds."""
    import json

    from benchmarks import inference_options
    from mkdseg.data import UnpairedSliceDataModule
    from mkdseg.data.preprocess import preprocess_nnunet
    from test_any_anatomy import CT_LABELS, LAS, LPS, MR_LABELS, make_dataset

    ct = make_dataset(tmp_path / "ct", "CT", CT_LABELS, LPS, "Liver", "left_kidney", n_cases=6)
    mr = make_dataset(tmp_path / "mr", "MRI", MR_LABELS, LAS, "liver", "left kidney", n_cases=2)
    preprocess_nnunet(ct, mr, tmp_path / "cache", image_size=16, progress=False)
    spec = UnpairedSliceDataModule(source="cache", root=str(tmp_path / "cache")).data_spec
    runs = [tmp_path / "study" / "runs" / "x" / f"fold0-seed{s}" for s in (0, 1)]
    for seed, run in enumerate(runs):
        _tiny_run(run, tmp_path / "cache", 10 * seed, spec)
    out = tmp_path / "out"
    assert inference_options.main([a for run in runs for a in ("--run", str(run))] + ["--out", str(out)]) == 0
    written = json.loads((out / "results.json").read_text())["results"]
    assert len(written) == 2 and len(written[0]["validation"]) == 1 and len(written[0]["test"]) == 3
    options = written[0]["options"]
    assert list(options) == list(inference_options.OPTIONS)
    assert len(written[0]["ensemble"]) == 3  # best, last and the other seed's best
    for entry in options.values():
        assert 0 <= entry["test"]["mean"] <= 100 and entry["cpu_s_per_scan"] > 0 and "Liver" in entry["test_pp"]
    assert "| plain |" in (out / "results.md").read_text() and "| ensemble |" in capsys.readouterr().out


def test_inference_options_benchmark_runs_as_a_file():
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "-m", "benchmarks.inference_options", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr


def test_segment_speed_times_each_option(tmp_path, capsys):
    """benchmarks/segment_speed.py's --settings at a tiny size: one line per option, plain first (1.00x)."""
    import re

    import yaml

    from benchmarks import segment_speed
    from conftest import TINY_MODEL

    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_MODEL.items() if k != "image_size"}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"init_args": model}}))
    assert segment_speed.main(["--shape", "48", "48", "6", "--config", str(config), "--image-size", "32", "--precision",
                               "fp32", "--settings", *segment_speed.SETTINGS]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^(\w+)\s+\d+\.\d+\s+\d+\.\d+\s+(\d+\.\d+)\s+\d+$", out, re.MULTILINE))
    assert list(rows) == list(segment_speed.SETTINGS) and rows["plain"] == "1.00"


def test_predict_writes_label_maps_post_processed_as_validation_decided(phantom_root, tmp_path):
    """`mkdseg predict`: predict_step hands the decision's classes to the writer, which keeps their largest component."""
    from mkdseg.inference import write_cached_prediction

    module = make_datamodule(phantom_root, n_val=1)
    module.setup("predict")
    batch = module.predict_dataloader().dataset[0]
    model = Baseline(image_size=32, seg_channels=(4, 8), seg_strides=(2,), eval_batch_size=4).eval()
    assert model.predict_step(batch, 0)["keep_largest"] == []
    model.postprocessing = {"keep_largest": {"seg": ["LV"], "other": ["MYO"]}}
    out = model.predict_step(batch, 0)
    assert out["keep_largest"] == [3] and out["probabilities"].shape[1:] == (8, 32, 32) and batch["plane"] == "PL"
    model.postprocess_in_test = False
    assert model.predict_step(batch, 0)["keep_largest"] == []

    probs = torch.zeros(len(batch["image"]), 8, 32, 32)
    probs[:, 0] = 1.0
    probs[:, 0, 2:12, 2:12], probs[:, 3, 2:12, 2:12] = 0.0, 1.0  # LV, in every slice
    probs[1, 0, 20:22, 20:22], probs[1, 3, 20:22, 20:22] = 0.0, 1.0  # a stray LV speck
    record = batch["record"]
    kept = written(write_cached_prediction(probs, record, model.spec, tmp_path / "kept.nii.gz", "index", keep_largest=[3]))
    raw = written(write_cached_prediction(probs, record, model.spec, tmp_path / "raw.nii.gz", "index"))
    assert (raw == 3).sum() == (kept == 3).sum() + 4 and np.array_equal(kept == 3, postprocess.largest_component(raw == 3))
