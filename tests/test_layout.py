"""The import direction of STYLE.md: Hydra only in train.py, Lightning only in its layer."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "seqchurn"
HYDRA_OK = {"train.py"}
LIGHTNING_OK = {"module.py", "datamodule.py", "callbacks.py", "inference.py", "train.py"}


def _importers(pattern: str) -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        if re.search(pattern, path.read_text(), flags=re.MULTILINE):
            found.add(str(path.relative_to(SRC)))
    return found


def test_hydra_and_omegaconf_only_in_train():
    assert _importers(r"^\s*(from|import) (hydra|omegaconf)\b") <= HYDRA_OK


def test_lightning_only_in_its_layer():
    pattern = r"^\s*(from|import) (pytorch_lightning|lightning)\b"
    assert _importers(pattern) <= LIGHTNING_OK


def test_the_checks_can_fail():
    assert "train.py" in _importers(r"^\s*(from|import) (hydra|omegaconf)\b")
