"""Checkpoints written before this version still load, segment and resume.

``tests/data/*_written_by_74e53ff.ckpt`` were written by mkdseg at commit 74e53ff (before label sets,
the CycleGAN base and the manual-optimisation module): 2 iterations of the tiny test networks on the
32-px test phantom, with Lightning's ModelCheckpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mkdseg.labels import DataSpec
from mkdseg.methods import MKDModule, OnlineTranslation, load_method

from conftest import make_datamodule, quiet_trainer

DATA = Path(__file__).parent / "data"
OLD = {"mkd": MKDModule, "online_translation": OnlineTranslation}


@pytest.mark.parametrize("name", sorted(OLD))
def test_an_old_checkpoint_restores_its_method_and_weights(name):
    path = DATA / f"{name}_written_by_74e53ff.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=False)
    assert "num_classes" in stored["hyper_parameters"] and "data_spec" not in stored["hyper_parameters"]
    model = load_method(path)
    assert type(model) is OLD[name] and model.spec == DataSpec.mmwhs()
    state = model.state_dict()
    assert state.keys() == stored["state_dict"].keys()
    assert all(torch.equal(state[k], stored["state_dict"][k]) for k in state)
    assert model.predict_proba(torch.zeros(1, 1, 32, 32)).shape == (1, 8, 32, 32)


def test_training_resumes_from_an_old_checkpoint(phantom_root):
    path = DATA / "mkd_written_by_74e53ff.ckpt"
    model = MKDModule(**{k: v for k, v in torch.load(path, weights_only=False)["hyper_parameters"].items()
                         if k not in ("num_classes", "data_spec")})
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, datamodule=make_datamodule(phantom_root), ckpt_path=path)
    assert trainer.global_step == 3  # 2 restored + 1 new iteration, optimizers and pools restored
    assert all(opt.state[next(iter(opt.state))]["step"].item() == 3 for opt in trainer.optimizers)
