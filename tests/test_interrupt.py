"""SIGTERM and SIGKILL of predict and plan in the middle of writing: a terminated run leaves
no file besides what existed before; a killed one leaves only temp files, which the next
run of the same output removes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, predict_file
from seqchurn.retention.jobs import run_plan


def _plan(predictions, output, cfg):
    run_plan(predictions, output, retention=dict(cfg.retention), data=None, seed=0)


def _interrupted(tmp_path, sig, name, script, *args):
    """Run `script` until it has written the temp file of output `name`, then send `sig`."""
    ready = tmp_path / "ready"
    cmd = [sys.executable, str(ROOT / "tests" / "pause.py"), name, str(ready)]
    cmd += [str(ROOT / "scripts" / script), f"hydra.run.dir={tmp_path / 'hydra'}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-2000:]
    return proc.returncode


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("job", ["predict", "plan"])
def test_an_interrupted_run_leaves_nothing_behind(scored, tmp_path, job, sig):
    ckpt, log, predictions, cfg = scored
    out = tmp_path / "out"
    out.mkdir()
    (out / "before.csv").write_text("a file that was there\n")
    if job == "predict":
        target = out / "p.parquet"
        args = [f"ckpt_path={ckpt}", "data=events", f"data.path={log}", f"output={target}"]
        args += ["scoring.progress=false", "scoring.explain=null"]
        code = _interrupted(tmp_path, sig, target.name, "predict.py", *args)
    else:
        target = out / "plan.parquet"
        args = [f"predictions={predictions}", f"output={target}", "~data"]
        code = _interrupted(tmp_path, sig, target.name, "plan.py", *args)

    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM
        assert _files(out) == ["before.csv"]
        return
    assert code == -signal.SIGKILL
    debris = [name for name in _files(out) if name != "before.csv"]
    assert debris and all(".seqchurn-tmp-" in name for name in debris)
    if job == "predict":
        predict_file(ckpt, log, target)
        assert _files(out) == ["before.csv", "p.parquet"]
    else:
        _plan(predictions, target, cfg)
        assert _files(out) == [
            "before.csv",
            "plan.parquet",
            "plan_profit_curve.png",
            "plan_segments.csv",
        ]
