"""Executes experiments/notebooks/direct_pred.ipynb with tiny settings."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "experiments", "notebooks", "direct_pred.ipynb")


def test_direct_pred_notebook_runs(tmp_path, monkeypatch):
    tiny = dict(NB_DATASET="synthetic", NB_EPOCHS="2", NB_PROBE_EPOCHS="1", NB_WIDTH="0.0625",
                NB_IMAGE_SIZE="16", NB_MAX_TRAIN="64", NB_MAX_TEST="32", NB_BATCH="16",
                NB_RESULTS_DIR=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
    for key, value in tiny.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "epochs recorded: [0, 1, 2]" in outputs
    assert any("image/png" in o.get("data", {}) for c in notebook.cells
               if c.cell_type == "code" for o in c.get("outputs", []))
    runs = [p.name for p in tmp_path.iterdir()]
    assert len(runs) == 1 and runs[0].startswith("notebook_direct_pred_")  # a fresh folder
    assert (tmp_path / runs[0] / "classifier" / "classifier.keras").is_file()
    assert "overwrite=True" not in "".join(c.source for c in notebook.cells)
