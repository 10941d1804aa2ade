"""The walkthrough notebook runs top to bottom on a sample of CDNOW."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def test_walkthrough_notebook_executes(monkeypatch):
    monkeypatch.setenv("SEQCHURN_NB_SMALL", "1")
    path = ROOT / "notebooks" / "01_cdnow_walkthrough.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "p_churn" in text and os.environ["SEQCHURN_NB_SMALL"] == "1"
