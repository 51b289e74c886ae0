"""benchmarks/method_cost.py runs at a tiny size, so it cannot rot."""

from __future__ import annotations

import json

import pytest

from conftest import REPO

from benchmarks import method_cost


def test_method_cost_times_every_setting_and_writes_its_table(tmp_path):
    out = tmp_path / "cost"
    assert method_cost.main(["--phantom", "--image-size", "32", "--n-target", "1", "--steps", "2", "--rounds", "1", "--out", str(out)]) == 0
    times = json.loads((out / "times.json").read_text())["seconds"]
    assert set(times) == set(method_cost.SETTINGS) and all(len(v) == 2 and min(v) > 0 for v in times.values())
    table = (out / "results.md").read_text()
    assert "| joint | " in table and "| 1.00 |" in table and "| selftrain | " in table


def test_method_cost_times_a_studys_rows_with_their_overrides(tmp_path, monkeypatch):
    built = []
    original = method_cost.build

    def spy(name, data, segmentor, overrides=()):
        model, dm = original(name, data, segmentor, overrides)
        built.append((name, model.hparams.get("mix_back"), dm.hparams.appearance))
        return model, dm

    monkeypatch.setattr(method_cost, "build", spy)
    out = tmp_path / "cost"
    assert method_cost.main(["--phantom", "--image-size", "32", "--n-target", "1", "--steps", "1", "--rounds", "1",
                             "--study", "recipe_ablation", "--out", str(out)]) == 0
    times = json.loads((out / "times.json").read_text())["seconds"]
    assert list(times)[:3] == ["joint", "Recipe (BCP, no GIN on the assistant)", "w/o the way back (one mixed batch)"]
    assert ("bcp", True, "none") in built and ("bcp", False, "none") in built and ("bcp", True, "gin") in built


def test_method_cost_refuses_an_override_it_cannot_apply():
    with pytest.raises(ValueError, match="trainer.max_steps"):
        method_cost.apply_overrides({}, {}, ("--trainer.max_steps=3",))
