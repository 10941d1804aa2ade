"""The benchmark: a smoke run end to end, and no test-period data tunes anything."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import hydra
import pandas as pd
import pytest

from conftest import ROOT
from seqchurn.data.labels import to_day


def test_quick_benchmark_writes_results_and_leaves_the_readme_alone(tmp_path):
    readme = hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest()
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        "--quick",
        "--datasets",
        "synthetic-bgnbd",
        "--models",
        "logistic",
        "--no-ablations",
        "--draws",
        "50",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(tmp_path / "benchmark.csv")
    expected = {
        "logistic",
        "logistic_rfm",
        "recency",
        "bgnbd",
        "logreg_summary",
        "rf_summary",
        "lgbm_summary",
        "oracle",
    }
    assert expected <= set(results["method"])
    assert results[["auroc", "brier", "cindex", "oracle_ratio"]].notna().all().all()
    assert results.loc[results["method"] == "oracle", "oracle_ratio"].iloc[0] == pytest.approx(1.0)
    boot = pd.read_csv(tmp_path / "bootstrap.csv")
    assert set(boot["reference"]) == {"logistic_rfm", "bgnbd", "logreg_summary", "lgbm_summary"}
    assert (boot["lo"] <= boot["mean_diff"]).all() and (boot["mean_diff"] <= boot["hi"]).all()
    assert json.loads((tmp_path / "benchmark.json").read_text())["meta"]["quick"] is True
    assert "| logistic |" in (tmp_path / "results.md").read_text()
    assert list((tmp_path / "plots").glob("reliability_*.png")) and list(
        (tmp_path / "plots").glob("*_roc.png")
    )
    assert hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest() == readme


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=cdnow"],
        ["data=cdnow", "data.test_cutoff=1997-09-30", "data.train_cutoffs=null"],
        ["data=synthetic"],
    ],
    ids=["cdnow@1997-12-31", "cdnow@1997-09-30", "synthetic"],
)
def test_early_stopping_tiers_and_tuning_see_only_the_training_window(make_cfg, overrides):
    cfg = make_cfg(overrides)
    # everything a run selects on is a validation metric
    assert cfg.optimized_metric.startswith("val/")
    for cb in cfg.callbacks.values():
        if cb is not None and "monitor" in cb:
            assert cb.monitor.startswith("val/")
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    test_cutoff, horizon = int(dm.test_cutoff), int(dm.hparams.horizon_days)
    assert test_cutoff == to_day(cfg.data.test_cutoff)
    for split in ("train", "val"):  # early stopping, tiers and the tree baselines' tuning use these
        snaps = dm.snapshots[split]
        assert (snaps["cutoff"] + horizon <= test_cutoff).all(), split
        # a snapshot's tau never reaches past the test cutoff either
        assert (snaps["cutoff"] + snaps["tau"] + horizon <= test_cutoff).all(), split
    assert not set(dm.snapshots["train"]["user_id"]) & set(dm.snapshots["val"]["user_id"])
