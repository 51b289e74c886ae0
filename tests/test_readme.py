"""The README tells the truth: every command in it runs (here, in order, at a smoke size), its Python runs,
and every link stays inside the repository and lands on a file and heading that exist.

Commands run as written, with three changes only: outputs go to a temporary folder instead of the
repository, smoke-size options are appended (later options win), and a ``*`` is expanded as the shell would.
"""

from __future__ import annotations

import csv
import glob
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mkdseg.cli import main

from conftest import REPO, SHARED_DATA

README = REPO / "README.md"
ABDOMEN = SHARED_DATA / "abdomen_chaos_btcv"
#: segmentors at the tests' size (options every method takes: the demo's second run is the recipe's WeakToStrong,
#: which has no generator), for commands that train on configs/demo.yaml's phantom
TINY_NETS = ["--model.init_args.seg_channels=[4, 8, 16]", "--model.init_args.seg_strides=[2, 2]",
             "--model.init_args.eval_batch_size=8", "--trainer.enable_progress_bar=false", "--data.batch_size=2"]
SHORT_FIT = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.samples_per_epoch=8"]


@pytest.fixture(scope="module")
def phantom8(tmp_path_factory) -> Path:
    """8 subjects per modality: a training fold of 4 has a validation, a labelled and unlabelled subjects."""
    from mkdseg.data.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom8")
    generate_phantom(root, n_target=8, n_assistant=8, image_size=32, n_slices=6, seed=0)
    return root


def phantom_args(root: Path) -> list[str]:
    return [f"--data.root={root}", "--data.phantom_subjects=8", "--data.phantom_slices=6", "--data.image_size=32",
            "--data.n_val=1"]


def code_blocks(language: str, text: str | None = None) -> list[list[str]]:
    text = README.read_text() if text is None else text
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    return [[line for line in block.splitlines()] for block in blocks]


def commands(block: list[str]) -> list[str]:
    """The block's commands, comments (``  # ...``) removed."""
    out = []
    for line in block:
        line = re.split(r"\s{2,}#", line)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def argv_of(command: str, variables: dict[str, str], outputs: dict[str, Path]) -> list[str]:
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    argv = []
    for token in shlex.split(command):
        for prefix, target in outputs.items():  # outputs into the temporary folder, not the repository
            replacement = str(target) + ("/" if prefix.endswith("/") else "")
            token = re.sub(rf"(^|=){re.escape(prefix)}", lambda m: m.group(1) + replacement, token)
        if "*" in token:
            matches = glob.glob(token)
            assert len(matches) == 1, f"{token}: the README's pattern matches {matches}"
            token = matches[0]
        argv.append(token)
    return argv


def run(argv: list[str]) -> None:
    assert argv[0] == "mkdseg", argv
    saved, sys.argv = sys.argv, ["mkdseg"]
    try:
        assert main(argv[1:]) in (0, None), argv
    except SystemExit as e:  # --print_config exits after printing
        assert e.code in (0, None), argv
    finally:
        sys.argv = saved


def test_links_stay_in_the_repository_and_land_on_what_exists():
    for doc in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            assert not re.match(r"[a-z]+:", target), f"{doc.name}: {target} leaves the repository"
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.is_relative_to(REPO) and file.exists(), f"{doc.name}: {target} does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, f"{doc.name}: {target}: no such heading"


def make_recipe(target: str, *variables: str) -> list[str]:
    """What ``make <target>`` runs, as make itself prints it (``-n``), the install step taken as done."""
    printed = subprocess.run(["make", "-s", "-n", "-o", ".venv/.mkdseg-installed", *variables, target], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    return shlex.split(printed.strip().splitlines()[-1])


def test_two_commands_are_the_makefiles_and_ci_runs_the_second():
    assert commands(code_blocks("bash")[0]) == ["make demo", "make test"]
    test = make_recipe("test")
    assert test[1:4] == ["-m", "pytest", "-q"] and test[-1] == "tests"  # the whole suite
    assert "make test" in commands((REPO / ".ci" / "run").read_text().splitlines())


def test_make_demo_runs_at_a_smoke_size(tmp_path, phantom8, capsys):
    from mkdseg import demo

    recipe = make_recipe("demo", f"RUN={tmp_path / 'demo'}")  # the run folder, as a user may choose it
    assert recipe[1:3] == ["-m", "mkdseg.demo"]
    argv = recipe[3:]
    assert demo.main([*argv, *TINY_NETS, *SHORT_FIT, *phantom_args(phantom8), "--data.n_target=1"]) == 0
    printed = capsys.readouterr().out
    assert "MKDModule (configs/demo.yaml)" in printed and "WeakToStrong (recipe)" in printed
    assert (tmp_path / "demo" / "mkd").is_dir() and (tmp_path / "demo" / "recipe").is_dir()  # as the README says


def test_the_command_line_block_runs_in_order(tmp_path, phantom8, capsys):
    block = commands(code_blocks("bash")[3])
    assert [c.split()[1] for c in block] == ["fit", "fit", "test", "validate", "predict", "sweep"]
    lightning_smoke = [*TINY_NETS, *phantom_args(phantom8), f"--trainer.default_root_dir={tmp_path / 'runs' / 'demo'}"]
    for command in block:
        argv = argv_of(command, {}, {"runs/": tmp_path / "runs"})
        if argv[1] == "sweep":
            argv += ["--max-runs", "1", "--out", str(tmp_path / "sweep"), *lightning_smoke, *SHORT_FIT]
        else:
            argv += [*lightning_smoke, *(SHORT_FIT if argv[1] == "fit" else [])]
        run(argv)
    # each test, validate and predict logs into a version of its own: the predictions are in the last one
    assert list((tmp_path / "runs" / "demo" / "mkd").glob("version_3/predictions/*.nii.gz"))
    assert "results" in capsys.readouterr().out.lower()  # the sweep's table


@pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"shared real data not found at {ABDOMEN}")
def test_your_own_data_in_five_commands_on_the_abdominal_datasets(tmp_path):
    """preprocess, compare (2 methods x 2 draws at a smoke budget, only the CPU size preset), fit, segment, evaluate."""
    block = commands(code_blocks("bash")[1])
    variables = dict(line.split("=", 1) for line in block if re.match(r"^[A-Z]+=", line))
    assert variables["A"].startswith("/path/to/")  # the user's own folder, never ours
    variables["A"] = str(ABDOMEN)
    steps = [line for line in block if line.startswith("mkdseg ")]
    assert [c.split()[1] for c in steps] == ["preprocess", "compare", "fit", "segment", "evaluate"]
    outputs = {name: tmp_path / name for name in ("data_cache/", "compare_abdomen", "runs/", "segs")}
    smoke = {
        # 8 scans of each dataset (btcv_000, which segment reads, among them): preprocessing all 50 was most of this
        # test's time; 8 CT still give every role: 4 held out, and 1 validation, 2 labelled, 1 unlabelled subject
        "preprocess": ["--max-cases", "8"],
        # 4 folds: 2 test volumes per draw, to keep the test short; the methods and draws as the issue asks
        # uncompiled: inductor's code generation would be most of a 2-iteration run (compile: tests/test_precision.py)
        "compare": ["--methods", "joint", "recipe", "--folds", "1", "--seeds", "2", "--steps", "2", "--set", "data.n_folds=4",
                    "--set", "model.init_args.compile=false"],
        # 4 folds, as compare's: the training fold's 6 CT give the cpu preset's 2 validation, 2 labelled and 2 unlabelled
        "fit": [*SHORT_FIT, "--trainer.enable_progress_bar=false", "--data.n_folds=4", "--model.init_args.compile=false"],
        "segment": ["--device", "cpu", "--no-progress"],
        "evaluate": ["--no-assd"],  # a 2-iteration model's scattered voxels make surface distances slow (tested elsewhere)
    }
    for command in steps:
        argv = argv_of(command, variables, outputs)
        run([*argv, *smoke[argv[1]]])

    rows = list(csv.DictReader((tmp_path / "compare_abdomen" / "n2" / "runs.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("joint", "0"), ("joint", "1"), ("recipe", "0"), ("recipe", "1")]
    assert all(r["val_step"] == "2" for r in rows)  # validated within the smoke budget: its weights were tested
    assert "Recommended: **" in (tmp_path / "compare_abdomen" / "recommendation.md").read_text()
    segmentation = nib.load(tmp_path / "segs" / "btcv_000.nii.gz")
    scan = nib.load(ABDOMEN / "ct_btcv" / "imagesTr" / "btcv_000_0000.nii.gz")
    assert segmentation.shape == scan.shape and np.allclose(segmentation.affine, scan.affine)
    assert set(np.unique(np.asarray(segmentation.dataobj))) <= {0, 1, 2, 3, 6}  # BTCV's own codes, as the README says
    scored = list(csv.DictReader((tmp_path / "segs" / "per_case.csv").open()))  # evaluate wrote beside the predictions
    assert [(r["subject"], r["structure"]) for r in scored] == [("btcv_000", s) for s in ("spleen", "right kidney", "left kidney", "liver")]


def test_the_library_example_runs(tmp_path, phantom8, monkeypatch):
    """The README's Python, with its cache and checkpoint paths pointed at a tiny phantom and run."""
    import lightning as L

    (source,) = ["\n".join(block) for block in code_blocks("python")]
    run_dir = tmp_path / "runs" / "abdomen" / "weak_to_strong" / "version_0" / "checkpoints"
    source = source.replace('"data_cache/abdomen128"', repr(str(phantom8)))
    source = source.replace('"runs/abdomen/weak_to_strong/version_0/checkpoints/last.ckpt"', repr(str(run_dir / "last.ckpt")))
    fit = L.Trainer.fit

    def short_fit(trainer, model, datamodule=None):  # the example's 1,000 iterations, at a smoke size
        small = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
        fit(small, model, datamodule=datamodule)
        small.save_checkpoint(run_dir / "last.ckpt")

    run_dir.mkdir(parents=True)
    monkeypatch.setattr(L.Trainer, "fit", short_fit)
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    probabilities = namespace["probabilities"]
    assert probabilities.shape[0] == 4 and probabilities.shape[1] == len(namespace["data"].data_spec["structures"]) + 1


@pytest.mark.skipif(not ABDOMEN.is_dir(), reason=f"shared real data not found at {ABDOMEN}")
def test_the_public_datasets_block_converts_stand_ins_of_each_download(tmp_path, monkeypatch):
    """Each `mkdseg convert` line, run as written in a folder that holds stand-ins of the downloads in their shipped
    layouts (tests/test_convert.py builds them from the shared real scans; its tests cover each case in detail)."""
    import shutil

    from mkdseg.data.nnunet import check_dataset_integrity
    from test_convert import SIFA, small_real_scans, write_btcv, write_t1dual, write_t2spir

    write_btcv(tmp_path / "RawData" / "Training", small_real_scans("ct_btcv", ("btcv_000",), 6))
    mr, classes, _ = small_real_scans("mr_chaos", ("chaos_001",), 3)[0]
    mr, classes = mr.astype(np.int16), classes.astype(np.uint8)
    chaos = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    write_t2spir(chaos, "1", mr, classes)
    write_t1dual(chaos, "1", mr, mr // 2, classes)
    for modality in ("ct", "mr"):
        (tmp_path / f"{modality}_train").mkdir()
        for f in SIFA.glob(f"{modality}_train_*"):
            shutil.copy(f, tmp_path / f"{modality}_train" / f.name)

    monkeypatch.chdir(tmp_path)
    block = commands(code_blocks("bash")[2])
    assert [c.split()[:3] for c in block] == [["mkdseg", "convert", d] for d in ("btcv", "chaos", "chaos", "mmwhs", "mmwhs")]
    for command in block:
        argv = shlex.split(command.replace("$A", str(tmp_path / "A")))
        assert main(argv[1:]) == 0, command
        assert check_dataset_integrity(Path(argv[argv.index("--out") + 1])) >= 1, command
    assert sorted(p.name for p in (tmp_path / "A").iterdir()) == ["ct_btcv", "mmwhs_ct", "mmwhs_mr", "mr_chaos", "mr_t1dual"]
