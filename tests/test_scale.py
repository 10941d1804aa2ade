"""Scale-out on existing engines: Lightning DDP on gloo, Optuna sweeps, Slurm, Ray predict."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF, ROOT, predict_file
from seqchurn.data.batches import BucketBatchSampler
from seqchurn.errors import DataError

TINY = ["data=synthetic", "data.synthetic.n_users=500", "logger=csv"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _train(tmp_path, *args, multirun=False):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *(["-m"] if multirun else [])]
    proc = subprocess.run(
        [*cmd, *TINY, *QUIET, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _printed_metrics(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(test/\w+)=([-\d.na]+)", stdout)}


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_split_rows_in_lockstep_and_never_score_a_row_twice(monkeypatch, shuffle):
    lengths = torch.randint(1, 40, (1001,)).numpy()
    per_rank = []
    for rank in range(3):
        monkeypatch.setattr("seqchurn.data.batches._rank_and_world", lambda r=rank: (r, 3))
        sampler = BucketBatchSampler(lengths, batch_size=64, shuffle=shuffle, seed=1)
        per_rank.append(list(sampler))
    rows = [torch.as_tensor(b) for batches in per_rank for b in batches]
    seen = torch.cat(rows)
    if shuffle:  # every rank steps equally often; rows drawn twice only to fill the last round
        assert len({len(b) for b in per_rank}) == 1 and len(seen) == 1002
        assert len(seen.unique()) == 1001
    else:  # evaluation: every row exactly once, no rank empty
        assert sorted(seen.tolist()) == list(range(1001)) and all(per_rank)


def test_ddp_on_two_cpu_processes_gives_the_single_process_test_metrics(tmp_path):
    """trainer=ddp with 2 gloo processes trains, validates and tests; the gathered test rows are
    every test row once: the checkpoint re-tested in one process prints the same metrics."""
    run = tmp_path / "ddp"
    ddp = _train(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run}",
    )
    assert ddp.stdout.count("best checkpoint:") == 1  # only rank 0 reports
    best = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=False)
    assert ckpt["tiers"] and ckpt["ChurnDataModule"]["preprocessing"]["preprocessor"]
    again = _train(
        tmp_path, "train=false", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'one'}"
    )
    both = _printed_metrics(ddp.stdout), _printed_metrics(again.stdout)
    assert both[0].keys() == both[1].keys() and "test/auroc" in both[0]
    for key in both[0]:
        assert both[0][key] == pytest.approx(both[1][key], abs=1e-4, nan_ok=True), key


def test_optuna_sweep_runs_its_trials_on_the_validation_metric(tmp_path):
    sweep = tmp_path / "sweep"
    _train(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.lr", "model.weight_decay", "data.batch_size"}
    assert 0.0 <= result["best_value"] <= 1.0
    assert len([p for p in sweep.iterdir() if (p / "checkpoints" / "best.ckpt").exists()]) == 2


def test_slurm_launcher_composes_with_the_cluster_settings():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1


def test_ray_engine_writes_the_single_process_rows(scored, tmp_path):
    ckpt, log, _, _ = scored
    predict_file(ckpt, log, tmp_path / "one.parquet")
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "predict.py"),
        f"ckpt_path={ckpt}",
        "data=events",
        f"data.path={log}",
        f"output={tmp_path / 'ray.parquet'}",
        "scoring.explain=none",
        "scoring.progress=false",
        "engine=ray",
        "ray.shards=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = pd.read_parquet(tmp_path / "one.parquet").set_index("user_id").sort_index()
    ray_rows = pd.read_parquet(tmp_path / "ray.parquet").set_index("user_id")
    assert ray_rows.index.is_unique
    pd.testing.assert_frame_equal(ray_rows.sort_index(), one, rtol=1e-5)


def test_ray_engine_refuses_a_shard_and_a_bad_checkpoint(scored, tmp_path):
    from seqchurn.ray_engine import predict_log_ray

    ckpt, log, _, _ = scored
    data = {"source": "events", "path": str(log)}
    with pytest.raises(DataError, match="leave scoring.shard unset"):
        predict_log_ray(ckpt_path=ckpt, data=data, output=tmp_path / "p.parquet", shard="0/2")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot load checkpoint"):
        predict_log_ray(ckpt_path=tmp_path / "bad.ckpt", data=data, output=tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()
