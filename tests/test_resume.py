"""Exact resume: a run interrupted mid-epoch and resumed from its checkpoint ends where the
uninterrupted run ends, bit for bit on CPU (weights, optimizer moments, image pools, schedules)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from mkdseg.methods.mkd import OPTIMIZER_ORDER

from conftest import TINY_MODEL, make_datamodule, make_model, quiet_trainer

SAMPLES_PER_EPOCH, BATCH = 6, 2  # three iterations per epoch


class BatchRecorder(L.Callback):
    """Which (target, assistant) slices each iteration trained on."""

    def __init__(self):
        self.pairs: list[list[tuple[int, int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.pairs.append(list(zip(batch["t_index"].tolist(), batch["a_index"].tolist())))


def train(phantom_root: Path, max_steps: int, checkpoint: ModelCheckpoint | None = None, ckpt_path: str | None = None,
          validate: bool = True):
    """``max_steps`` iterations of the tiny MKD (validating every 2 unless ``validate=False``), saving with
    ``checkpoint``, resuming from ``ckpt_path``; returns the model, the trainer and every batch's pairs."""
    L.seed_everything(0)
    model = make_model()
    dm = make_datamodule(phantom_root, batch_size=BATCH, samples_per_epoch=SAMPLES_PER_EPOCH)
    recorder = BatchRecorder()
    validation = dict(limit_val_batches=1.0, val_check_interval=2, check_val_every_n_epoch=None) if validate else {}
    trainer = quiet_trainer(max_steps=max_steps, callbacks=[recorder] + ([checkpoint] if checkpoint else []),
                            enable_checkpointing=checkpoint is not None, deterministic=True, **validation)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer, recorder.pairs


def assert_same_training_state(a, trainer_a, b, trainer_b):
    for name in OPTIMIZER_ORDER:
        sa, sb = a.network(name).state_dict(), b.network(name).state_dict()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key} differs"
    for name, oa, ob in zip(OPTIMIZER_ORDER, trainer_a.optimizers, trainer_b.optimizers):
        for pa, pb in zip(oa.state.values(), ob.state.values()):
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(pa[key], pb[key]), f"optimizer of {name}: {key} differs"
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    for pool in ("pool_t", "pool_a"):
        ia, ib = getattr(a.translator, pool).images, getattr(b.translator, pool).images
        assert len(ia) == len(ib) and all(torch.equal(x, y) for x, y in zip(ia, ib)), f"{pool} differs"


def test_mid_epoch_resume_continues_exactly(phantom_root, tmp_path):
    """8 iterations straight == 4 (stopped in the middle of the second epoch) + resume to 8. Tolerance: 0."""
    straight, trainer_s, pairs_s = train(phantom_root, 8)

    every_4 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    first, trainer_1, pairs_1 = train(phantom_root, 4, every_4)
    assert (tmp_path / "step=4.ckpt").exists() and trainer_1.global_step == 4
    checkpoint = torch.load(tmp_path / "step=4.ckpt", weights_only=False)
    assert {"rng_states", "image_pools", "optimizer_states", "lr_schedulers", "loops"} <= set(checkpoint)
    assert len(checkpoint["optimizer_states"]) == 6 and len(checkpoint["lr_schedulers"]) == 2

    resumed, trainer_r, pairs_r = train(phantom_root, 8, ckpt_path=str(tmp_path / "step=4.ckpt"))
    assert trainer_r.global_step == trainer_s.global_step == 8
    assert trainer_r.current_epoch == trainer_s.current_epoch
    # the resumed run trains on the batches the straight run trained on after its 4th iteration
    # (Lightning alone would replay the epoch's first batch)
    assert pairs_1 == pairs_s[:4]
    assert pairs_r == pairs_s[4:]
    assert_same_training_state(straight, trainer_s, resumed, trainer_r)


@pytest.mark.parametrize(("stop", "until"), [(2, 4), (4, 8)])
def test_extending_a_finished_run_is_exact(phantom_root, tmp_path, stop, until):
    """"Train N more iterations": a run stopped by max_steps in mid-epoch (2 or 4 of 3-iteration epochs),
    then extended from its last.ckpt, ends bit for bit where a straight run ends: same batches, weights,
    optimizer moments and learning rates (the stopped epoch's schedule step is not taken twice)."""
    straight, trainer_s, pairs_s = train(phantom_root, until, validate=False)
    # the checkpoint a finished run leaves: last.ckpt, written when max_steps stops it
    last = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_on_train_epoch_end=True)
    _, trainer_1, pairs_1 = train(phantom_root, stop, last, validate=False)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == stop
    assert [s["last_epoch"] for s in checkpoint["lr_schedulers"]] == [stop // 3] * 2  # whole epochs only
    extended, trainer_e, pairs_e = train(phantom_root, until, ckpt_path=str(tmp_path / "last.ckpt"), validate=False)
    assert trainer_e.global_step == until
    assert pairs_1 + pairs_e == pairs_s
    assert_same_training_state(straight, trainer_s, extended, trainer_e)


def test_resume_position_of_the_sampler_across_epoch_boundaries(phantom_root):
    """The loader of a resumed run starts where the fit loop stands: (epoch, batches done)."""
    from mkdseg.data.datamodule import UnpairedSliceDataModule

    class Progress:  # the part of a trainer _resume_point reads
        limit_train_batches = 1.0

        def __init__(self, done):
            self.global_step = done

    point = UnpairedSliceDataModule._resume_point
    assert point(None, 3) == (0, 0)
    assert point(Progress(0), 3) == (0, 0)
    assert point(Progress(4), 3) == (1, 1)
    assert point(Progress(6), 3) == (2, 0)  # a checkpoint at an epoch's last batch: next epoch, from its start


# -- a process killed with SIGKILL resumes with --ckpt_path last ---------------------------------
class PauseAt(L.Callback):
    """In the child process: when iteration ``step`` starts, say so in ``marker`` and wait to be killed."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(600)


def _config(run_dir: Path, phantom_root: Path, max_steps: int, pause: dict | None = None) -> Path:
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_MODEL.items() if k != "image_size"}
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"every_n_train_steps": 2, "save_last": True, "save_top_k": -1, "filename": "{step}"}}]
    if pause:
        callbacks.append({"class_path": "test_resume.PauseAt", "init_args": pause})
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "val_check_interval": 2,
            "check_val_every_n_epoch": None, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(run_dir),
            # a fixed logger version: the rerun finds this run's checkpoints folder and its last.ckpt
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir), "name": "tiny", "version": "job"}},
            "callbacks": callbacks,
        },
        "model": {"class_path": "mkdseg.methods.MKDModule", "init_args": model},
        "data": {"source": "phantom", "root": str(phantom_root), "image_size": 32, "phantom_subjects": 4,
                 "phantom_slices": 8, "batch_size": BATCH, "samples_per_epoch": SAMPLES_PER_EPOCH},
    }
    path = run_dir.parent / f"{run_dir.name}_{max_steps}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mkdseg", "fit", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def test_sigkilled_run_resumes_from_last_checkpoint(phantom_root, tmp_path):
    """Killed with SIGKILL during iteration 5 (mid-epoch: iteration 2 of epoch 2), rerun with
    ``--ckpt_path last``: it resumes from the step-4 checkpoint and ends as the uninterrupted run does."""
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    straight = _fit(["--config", str(_config(tmp_path / "straight", phantom_root, 8))], cwd=tmp_path)
    killed = _fit(["--config", str(_config(run_dir, phantom_root, 1000, {"step": 4, "marker": str(marker)}))], cwd=tmp_path)
    deadline = time.monotonic() + 180
    try:
        while not marker.exists():
            assert killed.poll() is None, killed.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach iteration 5 in time"
            time.sleep(0.1)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    ckpts = run_dir / "tiny" / "job" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 4

    output = _finish(_fit(["--config", str(_config(run_dir, phantom_root, 8)), "--ckpt_path", "last"], cwd=tmp_path))
    assert "Restoring states from the checkpoint" in output and "last.ckpt" in output
    final = torch.load(ckpts / "step=8.ckpt", weights_only=False)
    _finish(straight)
    reference = torch.load(tmp_path / "straight" / "tiny" / "job" / "checkpoints" / "step=8.ckpt", weights_only=False)
    assert final["global_step"] == reference["global_step"] == 8
    for key, value in reference["state_dict"].items():
        assert torch.equal(value, final["state_dict"][key]), f"{key} differs after the killed-and-resumed run"
