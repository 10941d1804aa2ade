"""Shared fixtures: composing the Hydra config the way scripts/train.py does, without a run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT / "scripts"))


def compose_cfg(overrides: list[str], out_dir: Path, config_name: str = "train") -> DictConfig:
    """The composed config with run paths pointed at `out_dir` (no Hydra run directory)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    return lambda overrides=(), name="train": compose_cfg(list(overrides), tmp_path, name)


@pytest.fixture(scope="session")
def scored(tmp_path_factory):
    """A tiny trained checkpoint, its event log as CSV and its predictions (Parquet)."""
    from seqchurn.train import train

    out = tmp_path_factory.mktemp("scored")
    cfg = compose_cfg(
        ["data=synthetic", "data.synthetic.n_users=300", "trainer.max_epochs=1", "logger=csv"],
        out,
    )
    _, objects = train(cfg)
    log = out / "events.csv"
    objects["datamodule"].events.to_csv(log, index=False)
    ckpt = out / "checkpoints" / "best.ckpt"
    predictions = out / "predictions.parquet"
    predict_file(ckpt, log, predictions)
    return ckpt, log, predictions, cfg


def predict_file(ckpt, log, output, **scoring):
    """predict_log on an events file, without progress bars or reasons unless asked."""
    from seqchurn.inference import predict_log

    scoring = {"progress": False, "explain": None, **scoring}
    data = {"source": "events", "path": str(log), "columns": None}
    return predict_log(ckpt_path=ckpt, data=data, output=output, **scoring)
