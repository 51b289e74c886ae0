"""Every benchmark script runs at a tiny size, so none can rot unnoticed. (iteration_cost, translation_quality,
validation_signal and inference_options have test files of their own.) Outputs go to tmp_path, never benchmarks/results."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_MODEL

from benchmarks import (cpu_speed, iteration_cost, preprocess_speed, run_breakdown, segment_speed, segmentor_speed,
                        synthetic_ct)
from mkdseg.labels import MMWHS


@pytest.fixture
def tiny_config(tmp_path):
    """An MKD config's sizes on the phantom at the tests' sizes (model.init_args, data), as segment_speed reads them."""
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_MODEL.items() if k != "image_size"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"init_args": model}, "data": {
        "source": "phantom", "image_size": 32, "phantom_slices": 8, "batch_size": 2, "num_workers": 0}}))
    return path


def test_synthetic_ct_writes_a_labelled_chest_ct(tmp_path):
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    assert synthetic_ct.main([str(image), "--label", str(label), "--shape", "40", "40", "12"]) == 0
    ct, codes = nib.load(image), np.asarray(nib.load(label).dataobj)
    assert ct.shape == codes.shape == (40, 40, 12) and ct.get_data_dtype() == np.int16
    assert set(np.unique(codes)) - {0} <= set(dict(MMWHS).values()) and (codes == dict(MMWHS)["MYO"]).any()


@pytest.mark.parametrize("field_of_view", ["body", "structures"])
def test_segment_speed(tmp_path, tiny_config, capsys, field_of_view):
    """The script's own call of segment_file (the crash this file was written for), with one pass or two."""
    assert segment_speed.main(["--shape", "48", "48", "6", "--config", str(tiny_config), "--image-size", "32",
                               "--precision", "fp32", "--field-of-view", field_of_view]) == 0
    out = capsys.readouterr().out
    assert "slice size 32" in out and "precision fp32" in out
    if field_of_view == "body":
        assert int(re.search(r"one pass over the body's box: (\d+)", out).group(1)) == 6  # every slice, once
    else:
        located, boxed = map(int, re.search(r"pass 1 \(locate\): (\d+), pass 2 \(structures' box\): (\d+)", out).groups())
        assert located > 0 and boxed > 0
    assert float(re.search(r"peak RSS\s+(\d+) MB", out).group(1)) > 0


def test_preprocess_speed(capsys):
    assert preprocess_speed.main(["--volumes", "1", "--shape", "48", "48", "12", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "1 x (48, 48, 12) int16 CT" in out and "image size 32" in out
    assert int(re.search(r"(\d+) slices cached", out).group(1)) > 0


def test_cpu_speed_runs_the_demo_and_reports(tmp_path, phantom_root, capsys):
    """One setting, the demo (configs/demo.yaml) at the tests' sizes for 2 iterations, in a child process."""
    tiny = [f"--data.root={phantom_root}", "--data.image_size=32", "--data.phantom_subjects=4", "--data.phantom_slices=8",
            "--data.batch_size=2", "--data.samples_per_epoch=4", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false", "--model.init_args.seg_channels=[4, 8, 16]",
            "--model.init_args.seg_strides=[2, 2]", "--model.init_args.eval_batch_size=8",
            *(f"--model.init_args.{k}={TINY_MODEL[k]}" for k in ("gen_filters", "gen_blocks", "disc_filters", "pool_size"))]
    out = tmp_path / "out"
    assert cpu_speed.main(["--settings", "fp32", "--out", str(out), "--work", str(tmp_path / "work"), *tiny]) == 0
    result = json.loads((out / "fp32.json").read_text())
    assert result["iterations"] == 2 and result["process_cpu_seconds"] > 0 and result["iterations_per_fit_second"] > 0
    assert set(result["dice_mean"]) == {"ens", "syn", "real"} and all(0 <= d <= 1 for d in result["dice_mean"].values())
    report = (out / "results.md").read_text()
    assert re.search(r"\| fp32 \| \d+\.\d+ \| 1\.00x \|", report) and report in capsys.readouterr().out


def test_gpu_check_script_parses_and_its_iteration_cost_options_exist(capsys):
    """gpu_check.sh needs a GPU to run; without one: it parses, and the script and the options it uses exist."""
    script = REPO / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "-m benchmarks.iteration_cost" in text and (REPO / "configs" / "mkd.yaml").is_file()
    with pytest.raises(SystemExit) as help_exit:
        iteration_cost.main(["--help"])
    assert help_exit.value.code == 0
    documented = capsys.readouterr().out
    # the script's own options (mkdseg fit's --section.key=value ones go through to every fit)
    used = {o for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)(?![.\w])", text.split("common=(", 1)[1])}
    assert used >= {"--configs", "--steps", "--skip", "--rounds", "--channels-last"}
    assert all(option in documented for option in used), used - {o for o in used if o in documented}


@pytest.mark.parametrize("script", ["cpu_speed.py", "preprocess_speed.py", "segment_speed.py", "iteration_cost.py",
                                    "synthetic_ct.py", "segmentor_speed.py", "run_breakdown.py"])
def test_each_script_runs_as_a_file(script):
    """`python -m benchmarks.<script> --help` from the repository root, as its docstring tells a user to run it: the
    file's own imports and argument parser work outside the tests."""
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{script.removesuffix('.py')}", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_segmentor_speed_measures_every_setting_against_the_plain_loop(tmp_path):
    assert segmentor_speed.main(["--sizes", "16", "--iterations", "1", "--rounds", "2", "--warmup", "1", "--channels", "4",
                                 "8", "--strides", "2", "--batch", "2", "--out", str(tmp_path),
                                 # compile's one line costs 20 s of compiling at any size: left to the real runs
                                 "--settings", "fp32", "bf16", "bf16_channels_last"]) == 0
    written = json.loads((tmp_path / "results.json").read_text())
    rows = written["results"]["16"]
    assert list(rows) == ["fp32", "bf16", "bf16_channels_last"] and rows["fp32"]["vs_fp32"] == 1.0
    assert all(r["it_per_s"] > 0 and r["min"] <= r["it_per_s"] <= r["max"] for r in rows.values())
    assert isinstance(written["native_bf16"], bool) and "| 16 | bf16_channels_last |" in (tmp_path / "results.md").read_text()


def test_run_breakdown_attributes_each_runs_cpu_time_to_its_phases_and_measures_flops(tmp_path, capsys):
    """joint and the recipe through fit_and_test on the phantom, 3 iterations at 32 px; the FLOP/s part at toy sizes."""
    assert run_breakdown.main(["--phantom", "--image-size", "32", "--n-target", "1", "--steps", "3", "--settings", "joint",
                               "recipe", "--flop-size", "32", "--flop-batches", "2", "--matmul-size", "128", "--conv-size", "16",
                               "--conv-batch", "2", "--conv-channels", "8", "--rounds", "1", "--warmup", "0", "--top-ops", "5",
                               "--no-compile", "--out", str(tmp_path)]) == 0
    # the benchmark's wrappers are gone after it, from every module it wrapped a function in
    wrapped = [f"{m}.{n}" for m, module in list(sys.modules.items()) if m.startswith("mkdseg") and module is not None
               for n in run_breakdown.MODULE_FUNCTIONS if getattr(vars(module).get(n), "__wrapped_by_run_breakdown__", False)]
    assert wrapped == []
    result = json.loads((tmp_path / "results.json").read_text())
    runs = {r["setting"]: r for r in result["runs"]}
    assert list(runs) == ["joint", "recipe"]
    for run in runs.values():
        phases = run["phases"]
        assert run["iterations"] == 3 and run["validations"] == 1 and run["torch_threads"] == 1 and run["data_num_workers"] == 0
        # every CPU second of the run counted once
        assert sum(p["cpu_s"] for p in phases.values()) == pytest.approx(run["process_cpu_s"])
        assert sum(p["share"] for p in phases.values()) == pytest.approx(1.0)
        assert all(phases[p]["cpu_s"] > 0 for p in ("data", "student_fwd", "losses", "backward", "optimizer", "logging",
                                                    "validation", "setup", "test"))
        assert phases["backward"]["calls"] == phases["optimizer"]["calls"] == 3 and phases["validation"]["calls"] == 1
    recipe, joint = runs["recipe"]["phases"], runs["joint"]["phases"]
    assert recipe["teacher"]["calls"] == recipe["ema"]["calls"] == 3  # pseudo_label's own teacher forward is one call
    assert recipe["gin"]["cpu_s"] > 0 and recipe["mixing"]["cpu_s"] > 0
    assert joint["teacher"]["cpu_s"] == joint["gin"]["cpu_s"] == joint["ema"]["cpu_s"] == 0
    flops = result["flops"]
    matmul = flops["peaks"][0]
    assert matmul["gflop"] == pytest.approx(2 * 128 ** 3 / 1e9) and matmul["gflops"] > 0
    rows = {r["setting"]: r for r in flops["rows"]}
    assert set(rows) == {"fp32", "fp32 channels_last"}
    fp32 = rows["fp32"]
    assert fp32["batch"] == 2 and fp32["gflops"] == pytest.approx(fp32["gflop"] / fp32["cpu_s"])
    assert fp32["of_matmul_peak"] == pytest.approx(fp32["gflops"] / matmul["gflops"])
    # the first convolution (1 -> 16, 3x3, stride 2, 32 px in, batch 2): forward and its weight gradient, no input gradient
    first = flops["conv_layers"][0]
    assert (first["in"], first["out"], first["input_hw"]) == (1, 16, 32)
    assert first["gflop"] * 1e9 == pytest.approx(2 * (2 * 2 * 16 * 16 * 16 * 1 * 9))
    assert sum(c for c in flops["profile_categories"].values()) > 0 and flops["profile_categories"]["convolution"] > 0
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("# Where") and "Command: `python -m benchmarks.run_breakdown --phantom" in report
    assert re.search(r"\| backward \| \d+\.\d{4} \| \d+\.\d%", report) and "| fp32 | 2 |" in report
    assert report in capsys.readouterr().out
