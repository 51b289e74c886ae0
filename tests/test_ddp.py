"""DDP on two CPU processes (gloo), launched as a user does: ``mkdseg fit ... --config configs/trainer/ddp.yaml``.

One run, inspected from inside every rank by :class:`RankProbe` (imported by the child processes
from this file): gradients of all six networks are all-reduced, each rank trains on its own share
of the pairs, validation is computed over all volumes on every rank, and only rank 0 writes logs,
figures, tables, checkpoints and the (offline) W&B run; a sweep-style argument reaches every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

from conftest import REPO, TINY_MODEL

NETWORKS = ("g_at", "g_ta", "d_t", "d_a", "s_syn", "s_real")
SUBJECTS, SLICES, BATCH, SAMPLES = 10, 8, 2, 16  # folds of 5: 2 train, 3 validate (uneven over 2 ranks)


class RankProbe(L.Callback):
    """Writes ``rank<r>.json`` and ``rank<r>.pt`` into ``out_dir``: what this rank saw and did."""

    def __init__(self, out_dir: str):
        self.out = Path(out_dir)
        self.record: dict = {"pairs": [], "val": [], "renders": 0, "tables": 0, "checkpoint_writes": 0}

    def setup(self, trainer, pl_module, stage):
        import mkdseg.callbacks.run_logs as callbacks

        self.record["rank"], self.record["world_size"] = trainer.global_rank, trainer.world_size
        record = self.record
        figure, write = callbacks.sample_figure, callbacks.atomic_write_text

        def counting_figure(*args, **kwargs):
            record["renders"] += 1
            return figure(*args, **kwargs)

        def counting_write(path, text):
            record["tables"] += Path(path).name.startswith("dice_")
            return write(path, text)

        callbacks.sample_figure, callbacks.atomic_write_text = counting_figure, counting_write
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint

        def counting_save(*args, **kwargs):
            record["checkpoint_writes"] += 1
            return save(*args, **kwargs)

        io.save_checkpoint = counting_save

    def on_fit_start(self, trainer, pl_module):
        self.initial = {n: {k: v.clone() for k, v in pl_module.network(n).state_dict().items()} for n in NETWORKS}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.record["pairs"].append(list(zip(batch["t_index"].tolist(), batch["a_index"].tolist())))

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            rows = pl_module.evaluation_summary("val")["rows"]
            self.record["val"].append({
                "dice_ens": float(trainer.callback_metrics["val/dice_ens"]),
                "subjects": sorted({r["subject"] for r in rows}),
                "rows": len(rows),
            })

    def on_fit_end(self, trainer, pl_module):
        import wandb

        dm = trainer.datamodule
        self.record.update(
            n_target=len(dm.target_train), n_assistant=len(dm.assistant_train),
            val_subjects=sorted(r.subject for r in dm.val_records),
            lambda_kd_real=pl_module.hparams.lambda_kd_real, global_step=trainer.global_step,
            wandb_run=wandb.run is not None,
        )
        self.out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        final = {n: pl_module.network(n).state_dict() for n in NETWORKS}
        torch.save({"initial": self.initial, "final": final}, self.out / f"rank{rank}.pt")
        (self.out / f"rank{rank}.json").write_text(json.dumps(self.record))


def ddp_config(tmp_path: Path) -> Path:
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_MODEL.items() if k != "image_size"}
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 4, "val_check_interval": 2, "check_val_every_n_epoch": None, "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "run"),
            "logger": {"class_path": "lightning.pytorch.loggers.WandbLogger",
                       "init_args": {"save_dir": str(tmp_path / "run"), "project": "mkdseg-test", "offline": True}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"monitor": "val/dice_ens", "mode": "max", "save_last": True, "dirpath": str(tmp_path / "ckpt")}},
                {"class_path": "test_ddp.RankProbe", "init_args": {"out_dir": str(tmp_path / "probe")}},
            ],
        },
        "model": {"class_path": "mkdseg.methods.MKDModule", "init_args": model},
        "data": {"source": "phantom", "root": str(tmp_path / "phantom"), "image_size": 32, "phantom_subjects": SUBJECTS,
                 "phantom_slices": SLICES, "batch_size": BATCH, "samples_per_epoch": SAMPLES, "n_val": 3},
    }
    path = tmp_path / "tiny_ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ddp_two_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # no wandb-core service of this process
    env.update(PYTHONWARNINGS="ignore", PYTHONPATH=str(Path(__file__).parent), WANDB_MODE="offline",
               WANDB_SILENT="true", OMP_NUM_THREADS="1")
    ddp = REPO / "configs" / "trainer" / "ddp.yaml"
    command = [sys.executable, "-m", "mkdseg", "fit", "--config", str(ddp_config(tmp_path)), "--config", str(ddp),
               "--trainer.accelerator=cpu", "--trainer.devices=2", "--model.lambda_kd_real=0.25"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(tmp_path / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["global_step"] == 4 for r in ranks)

    # every gradient was all-reduced: all six networks changed, identically on both ranks
    for name in NETWORKS:
        final0, final1, initial = states[0]["final"][name], states[1]["final"][name], states[0]["initial"][name]
        for key in final0:
            assert torch.equal(final0[key], final1[key]), f"{name}.{key} differs between ranks"
            assert not torch.equal(final0[key], initial[key]), f"{name}.{key} did not train"

    # each rank trained on its own pairs: rank r took every second pair of the epoch's sequence
    from mkdseg.data.datasets import UnpairedSampler

    n_a = ranks[0]["n_assistant"]
    sequence = list(UnpairedSampler(ranks[0]["n_target"], n_a, SAMPLES, seed=0))  # epoch 0, one process
    for r, record in enumerate(ranks):
        drawn = [t * n_a + a for batch in record["pairs"] for t, a in batch]
        assert drawn == sequence[r::2][: len(drawn)]
    assert not set(map(tuple, sum(ranks[0]["pairs"], []))) & set(map(tuple, sum(ranks[1]["pairs"], [])))

    # validation over all three validation volumes on both ranks, the same numbers
    assert len(ranks[0]["val"]) == len(ranks[1]["val"]) == 2
    for v0, v1 in zip(ranks[0]["val"], ranks[1]["val"]):
        assert v0 == v1
        assert v0["subjects"] == ranks[0]["val_subjects"] and len(v0["subjects"]) == 3
        assert v0["rows"] == 3 * 3 * 7  # predictors x volumes x structures, DistributedSampler padding removed

    # figures, tables, checkpoints and the W&B run: rank 0 only
    assert ranks[0]["renders"] == 2 and ranks[1]["renders"] == 0
    assert ranks[0]["tables"] == 2 and ranks[1]["tables"] == 0
    assert ranks[0]["checkpoint_writes"] >= 1 and ranks[1]["checkpoint_writes"] == 0
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    assert [r["wandb_run"] for r in ranks] == [True, False]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # the sweep-style argument reached both ranks
    assert [r["lambda_kd_real"] for r in ranks] == [0.25, 0.25]


def test_sampler_shares_partition_each_epoch_and_resume_within_a_share():
    from torch.utils.data import DistributedSampler

    from mkdseg.data.datasets import UnpairedSampler

    whole = UnpairedSampler(n_target=7, n_assistant=5, num_samples=11, seed=1)
    shares = [UnpairedSampler(7, 5, 11, seed=1, num_replicas=3, rank=r) for r in range(3)]
    assert isinstance(shares[0], DistributedSampler)  # Lightning uses it as it is, no wrapper
    sequence = list(whole)
    parts = [list(s) for s in shares]
    assert [len(p) for p in parts] == [len(s) for s in shares] == [4, 4, 4]  # 11 padded to 12
    assert [x for i in range(4) for x in (parts[0][i], parts[1][i], parts[2][i])] == (sequence + sequence[:1])
    # the next pass is the next epoch, for the whole and for every share alike
    assert list(whole) != sequence and [list(s) for s in shares] != parts
    # a resumed share skips what was trained on, in the epoch it was given for only
    resumed = UnpairedSampler(7, 5, 11, seed=1, num_replicas=3, rank=1, epoch=0, start=2)
    assert list(resumed) == parts[1][2:]
    assert len(resumed) == 4 and list(resumed) == [list(s) for s in [UnpairedSampler(7, 5, 11, 1, 3, 1, epoch=1)]][0]
    # Lightning's epoch number runs ahead of the data when a stopped run is extended: it does not move the sampler
    extended = UnpairedSampler(7, 5, 11, seed=1, num_replicas=3, rank=1, epoch=0, start=2)
    extended.set_epoch(1)
    assert list(extended) == parts[1][2:]
