"""The lab's translator probe (benchmarks/translation_quality.py): its scores, and a tiny run on compare's presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from benchmarks import translation_quality as tq
from conftest import TINY_MODEL
from mkdseg.presets import PRESETS
from mkdseg.labels import MMWHS

MMWHS_NAMES = [name for name, _ in MMWHS]


@pytest.fixture
def tiny_phantom_size(tmp_path, phantom_root):
    """The cpu preset at the tests' sizes, on the 32-px test phantom (4 subjects per modality)."""
    config = yaml.safe_load((PRESETS / "cpu.yaml").read_text())
    config["trainer"].update(max_steps=2, log_every_n_steps=1)
    config["model"]["init_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MODEL.items() if k != "image_size"}
    config["data"].update(source="phantom", root=str(phantom_root), image_size=32, phantom_subjects=4, phantom_slices=8,
                          batch_size=2, samples_per_epoch=4, n_val=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pooled_dice_counts_the_classes_of_the_label():
    label = torch.tensor([[0, 1, 1], [2, 2, 0]])
    assert tq.pooled_dice(label, label) == 1.0
    # class 1: 2*1/(1+2); class 2: 2*2/(3+2); class 3 is absent from the label and not counted
    assert tq.pooled_dice(torch.tensor([[0, 1, 2], [2, 2, 3]]), label) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_a_tiny_probe_runs_reuses_its_runs_and_reports(tmp_path, tiny_phantom_size):
    out = tmp_path / "out"
    args = ["--size", str(tiny_phantom_size), "--steps", "2", "--every", "1", "--judge-steps", "2", "--seeds", "0",
            "--held-out", "1", "--variant", "paper", "--variant", "resize:model.init_args.gen_upsampling=resize",
            "--out", str(out), "--work", str(tmp_path / "work")]
    assert tq.main(args) == 0
    result = json.loads((out / "resize-seed0.json").read_text())
    assert result["sets"] == [["model.init_args.gen_upsampling", "resize"]]
    assert result["held_out_assistant_subjects"] == ["003"]  # the last of the 4 MR subjects, never trained on
    config = yaml.safe_load((tmp_path / "work" / "resize-seed0" / "config.yaml").read_text())
    assert config["data"]["n_assistant"] == 3 and config["model"]["init_args"]["gen_upsampling"] == "resize"
    assert config["model"]["class_path"] == "mkdseg.methods.MKDModule"
    rows = result["rows"]
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert rows[0]["cpu_seconds"] <= rows[1]["cpu_seconds"] <= rows[2]["cpu_seconds"]
    assert all(0 <= row["judge"] <= 1 and set(row["contrast"]) == {"fat<MYO", "RA<AA"} for row in rows)
    assert set(rows[-1]["intensity_error"]) <= set(MMWHS_NAMES)
    report = (out / "results.md").read_text()
    assert "| paper |" in report and "| resize |" in report and "At equal CPU seconds" in report
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"

    # a finished run is reused, not trained again: its JSON is what the report reads
    result["rows"][-1]["judge"] = 0.123456
    (out / "resize-seed0.json").write_text(json.dumps(result))
    (out / "paper-seed0.json").unlink()
    assert tq.main(args) == 0
    assert json.loads((out / "resize-seed0.json").read_text())["rows"][-1]["judge"] == 0.123456
    assert (out / "paper-seed0.json").is_file()

    # --report-only rebuilds the report from the JSON there, and trains nothing
    (out / "paper-seed0.json").unlink()
    assert tq.main(args + ["--report-only"]) == 0
    assert not (out / "paper-seed0.json").exists()
    report = (out / "results.md").read_text()
    assert "| resize | 1 |" in report and "| paper |" not in report and "0.123" in report


def test_probe_reference_scores_the_perfect_translation_as_perfect(phantom_root):
    """The phantom's own CT rendering has no contrast error and keeps CT's orders; the MR rendering of
    the same anatomy breaks fat < MYO (fat is bright in MR)."""
    from mkdseg.data.cache import SliceCache
    from mkdseg.data.phantom import render_record_as

    records = SliceCache(phantom_root).volumes("mri")[:2]
    reference = tq.PhantomReference.of(records, "ct")
    labels = torch.cat([torch.from_numpy(np.array(SliceCache(phantom_root).load(r)[1])) for r in records])
    errors = reference.intensity_errors(reference.images, labels, MMWHS_NAMES)
    assert errors and max(errors.values()) == 0.0
    assert reference.contrast_orders(reference.images, list(tq.CT_CONTRAST)) == {"fat<MYO": True, "RA<AA": True}
    mr = torch.from_numpy(np.concatenate([render_record_as(r, "mri") for r in records]))[:, None]
    assert reference.contrast_orders(mr, ["fat<MYO"]) == {"fat<MYO": False}
    mr_errors = reference.intensity_errors(mr, labels, MMWHS_NAMES)
    assert sum(mr_errors.values()) / len(mr_errors) > 50  # HU: raw MR is far from CT on average


def test_probe_curves_interpolate_and_variants_parse():
    rows = [{"iteration": 0, "judge": 0.0}, {"iteration": 100, "judge": 0.5}, {"iteration": 200, "judge": 0.7}]
    assert tq.interpolate(rows, "iteration", 50) == pytest.approx(0.25)
    assert tq.interpolate(rows, "iteration", 150) == pytest.approx(0.6)
    assert tq.interpolate(rows, "iteration", 250) is None  # beyond the run: not extrapolated
    assert tq.parse_variant("paper") == ("paper", [])
    assert tq.parse_variant("x:model.init_args.lambda_cyc=5,data.n_val=0") == (
        "x", [("model.init_args.lambda_cyc", 5), ("data.n_val", 0)])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        tq.parse_variant("x:lambda_cyc")
