"""benchmarks/method_cost.py runs at a tiny size, so it cannot rot."""

from __future__ import annotations

import json

from conftest import REPO

from benchmarks import method_cost


def test_method_cost_times_every_setting_and_writes_its_table(tmp_path):
    out = tmp_path / "cost"
    assert method_cost.main(["--phantom", "--image-size", "32", "--n-target", "1", "--steps", "2", "--rounds", "1", "--out", str(out)]) == 0
    times = json.loads((out / "times.json").read_text())["seconds"]
    assert set(times) == set(method_cost.SETTINGS) and all(len(v) == 2 and min(v) > 0 for v in times.values())
    table = (out / "results.md").read_text()
    assert "| joint | " in table and "| 1.00 |" in table and "| selftrain | " in table
