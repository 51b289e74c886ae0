"""notebooks/walkthrough.ipynb runs top to bottom (at tiny size), so it cannot rot."""

from __future__ import annotations

import json

import nbclient  # the dev extra installs both: a missing one is a failure, not a skip
import nbformat

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_runs_at_tiny_size(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "MAX_STEPS" in first.source and "parameters" in first.metadata.get("tags", [])
    first.source += "\n\n# tiny size (tests/test_notebook.py)\n" + "\n".join([
        "MAX_STEPS = 2", "IMAGE_SIZE = 32", "PHANTOM_SUBJECTS = 6", "PHANTOM_SLICES = 8", "SMALL_NETS = True", "N_TARGET = 1",
        f"DATA_ROOT = {json.dumps(str(tmp_path / 'phantom'))}", "THREADS = 1",
    ])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 4  # data, translation, segmentations, GIN's styles
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "2 iterations" in text and "recipe: 2 iterations" in text and "1 unlabelled ct subject" in text
    tables = [o["data"]["text/markdown"] for o in outputs if o.output_type == "display_data" and "text/markdown" in o.get("data", {})]
    assert any("| ens |" in t and "MYO" in t for t in tables)
    assert any("| teacher |" in t for t in tables) and any("recipe (joint + BCP pseudo-labels)" in t for t in tables)
