"""Re-running train in a killed run's folder resumes from last.ckpt and ends where an
uninterrupted run ends: same test metrics, best.ckpt the best of the whole run."""

import os
import re
import signal
import subprocess
import sys

import torch

from conftest import ROOT

TINY = [
    "model=lstm",
    "data=synthetic",
    "data.synthetic.n_users=300",
    "trainer.max_epochs=3",
    "callbacks.early_stopping.patience=10",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def _train(run_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run_dir}"]
    return subprocess.run(
        [*cmd, *TINY, *extra], capture_output=True, text=True, env=env, timeout=600
    )


def _test_metrics(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(test/\w+)=([-\d.na]+)", stdout)}


def test_a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path):
    whole = _train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _train(
        tmp_path / "run", "+callbacks.kill._target_=killer.KillAtEpoch", "+callbacks.kill.epoch=2"
    )
    assert killed.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "last.ckpt").exists() and not (checkpoints / "fit_complete").exists()

    resumed = _train(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the interrupted run" in resumed.stderr + resumed.stdout
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    expected, got = _test_metrics(whole.stdout), _test_metrics(resumed.stdout)
    assert expected and got == expected

    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=False)
    reference = torch.load(
        tmp_path / "whole" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    assert best["epoch"] == reference["epoch"] and "tiers" in best
    assert "preprocessing" in best["ChurnDataModule"]
