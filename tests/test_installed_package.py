"""The paper's Table 1 runs as a `compare` study from the installed package: the wheel carries the presets and the
studies, and nothing reads the source checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_table1_plans_from_an_installed_wheel(tmp_path, phantom_root):
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)]
    subprocess.run(build, check=True, cwd=tmp_path, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mkdseg-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    script = ("import mkdseg, sys; from mkdseg.cli import main; print(mkdseg.__file__); "
              f"sys.exit(main(['compare', '--study', 'table1', '--cache', {str(phantom_root)!r}, '--report-only', "
              f"'--out', {str(tmp_path / 'table1')!r}]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(str(site))  # the installed copy, not the checkout
    # the study's 8 methods (MKD's three rows share one run) x 2 folds x 2 seeds, planned from the installed presets
    assert "32 run(s): 0 finished before, 32 to train" in done.stdout
