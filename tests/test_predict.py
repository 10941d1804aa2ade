"""predict: checkpoint + raw events -> one row per eligible user, streamed, atomic, with clear bad-input errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, compose_cfg
from seqchurn.data.labels import to_day
from seqchurn.errors import DataError
from seqchurn.inference import SURVIVAL_DAYS, Scorer, load_model, predict_log, write_predictions
from seqchurn.train import train

COLUMNS = [
    "user_id",
    "cutoff",
    "p_churn",
    *[f"s_{d}" for d in SURVIVAL_DAYS],
    "tau_median_days",
    "tau_mean_days",
    "expected_churn_date",
    "value_at_risk",
    "risk_tier",
    "segment",
    "cluster",
    "top_reasons",
    "explain_method",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(
        [
            "model=lstm",
            "data=synthetic",
            "data.synthetic.n_users=400",
            "trainer.max_epochs=1",
            "logger=csv",
            "callbacks.recalibration.min_rows=20",  # fitted on this small validation set too
        ],
        out,
    )
    metrics, objects = train(cfg)
    assert (out / "survival_check.csv").exists() and 0 <= metrics["val/km_share_inside"] <= 1
    dm = objects["datamodule"]
    log = out / "events.csv"
    dm.events[["user_id", "timestamp", "event_type", "amount", "quantity"]].to_csv(log, index=False)
    return objects, out / "checkpoints" / "best.ckpt", log, dm


def _predict(ckpt, log, out, **kw):
    kw.setdefault("progress", False)
    data = {"source": "events", "path": str(log), "columns": None}
    return predict_log(ckpt_path=ckpt, data=data, output=out, **kw)


def test_predictions_equal_the_trained_module_and_have_every_column(trained, tmp_path):
    objects, ckpt, log, dm = trained
    summary = _predict(ckpt, log, tmp_path / "p.parquet")
    pred = pd.read_parquet(tmp_path / "p.parquet")
    assert summary["rows"] == len(pred) and summary["cutoff"] == "2021-03-31"
    assert list(pred.columns[: len(COLUMNS)]) == COLUMNS or set(COLUMNS) <= set(pred.columns)
    eligible = dm.events.loc[dm.events["day"] <= to_day("2021-03-31"), "user_id"].nunique()
    assert len(pred) == eligible and pred["user_id"].is_unique

    # the test users' p_churn as the trained module scored them in trainer.test
    best = load_model(ckpt)
    assert best.calibration["rows"] >= 20  # train's test metrics and predict both apply it
    test = dm.snapshots["test"]
    scorer = Scorer(best)
    direct = scorer.score(
        dm.events[dm.events["user_id"].isin(test["user_id"])], to_day("2021-03-31")
    )
    merged = direct.merge(pred, on="user_id", suffixes=("", "_file"))
    assert len(merged) == len(test)
    np.testing.assert_allclose(merged["p_churn"], merged["p_churn_file"], rtol=1e-5, atol=1e-6)
    # segments come from the checkpoint: a subset, or one user alone, gets the file's segments
    assert best.preprocessing["segments"]["centroids"]
    for col in ("segment", "cluster", "risk_tier"):
        assert (merged[col] == merged[f"{col}_file"]).all(), col
    one = pred.iloc[len(pred) // 2]
    alone = scorer.score(dm.events[dm.events["user_id"] == one["user_id"]], to_day("2021-03-31"))
    assert (alone.loc[0, "segment"], alone.loc[0, "cluster"]) == (one["segment"], one["cluster"])
    in_test = objects["test_predictions"]
    order = test["user_id"].to_numpy()[in_test["index"]]
    from_test = pd.Series(in_test["p_churn"], index=order)
    np.testing.assert_allclose(
        merged.set_index("user_id").loc[order, "p_churn"], from_test, rtol=1e-5, atol=1e-6
    )
    # the curve the benchmark's survival metrics read is predict's s_d at the bin edges
    edges = list(best.hparams.bin_edges)
    for d in (30, 90, 180):
        if d in edges:
            np.testing.assert_allclose(
                merged.set_index("user_id").loc[order, f"s_{d}"],
                in_test["surv"][:, edges.index(d)],
                rtol=1e-5,
                atol=1e-6,
            )

    assert pred["p_churn"].between(0, 1).all()
    s = pred[["s_30", "s_90", "s_180"]].to_numpy()
    assert (np.diff(s, axis=1) <= 1e-7).all()  # survival never rises
    assert pred["s_365"].isna().all()  # past the last finite edge of the merged bins
    assert (pred["tau_median_days"].fillna(0) >= 0).all() and (pred["value_at_risk"] >= 0).all()
    likely_gone = pred["p_churn"] >= 0.5
    assert (pred.loc[likely_gone, "expected_churn_date"] == pred.loc[likely_gone, "cutoff"]).all()
    assert pred["top_reasons"].str.len().gt(0).mean() > 0.5

    # tiers fitted on validation at train time travel in the checkpoint
    tiers = best.preprocessing["tiers"]
    fitted = [cb for cb in objects["trainer"].callbacks if hasattr(cb, "tiers")][0].tiers
    assert tiers == fitted and tiers["names"] == ["high", "medium", "low"]
    assert pred["risk_tier"].isin(tiers["names"]).all()
    high = pred["p_churn"] >= tiers["tiers"][0]["min_p"]
    assert (pred.loc[high, "risk_tier"] == "high").all() and (
        pred.loc[~high, "risk_tier"] != "high"
    ).all()


def test_streaming_in_small_chunks_gives_the_same_file(trained, tmp_path):
    _, ckpt, log, _ = trained
    _predict(ckpt, log, tmp_path / "whole.parquet", stream=False, explain=None)
    _predict(ckpt, log, tmp_path / "stream.csv", stream=True, chunk_rows=97, explain=None)
    whole = (
        pd.read_parquet(tmp_path / "whole.parquet").sort_values("user_id").reset_index(drop=True)
    )
    stream = (
        pd.read_csv(tmp_path / "stream.csv", dtype={"user_id": str})
        .sort_values("user_id")
        .reset_index(drop=True)
    )
    assert list(whole["user_id"]) == list(stream["user_id"])
    np.testing.assert_allclose(whole["p_churn"], stream["p_churn"], rtol=1e-5)
    assert (whole["segment"] == stream["segment"]).all() and (
        whole["cluster"] == stream["cluster"]
    ).all()


def test_unsorted_log_is_refused_when_streaming_is_forced(trained, tmp_path):
    _, ckpt, log, _ = trained
    shuffled = pd.read_csv(log).sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    with pytest.raises(DataError, match="not sorted by user"):
        _predict(
            ckpt, tmp_path / "shuffled.csv", tmp_path / "p.parquet", stream=True, chunk_rows=50
        )
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*"))
    _predict(
        ckpt, tmp_path / "shuffled.csv", tmp_path / "p.parquet", explain=None
    )  # auto reads it whole
    assert (tmp_path / "p.parquet").exists()


def test_an_interrupted_predict_leaves_no_file(trained, tmp_path, monkeypatch):
    _, ckpt, log, _ = trained
    calls = {"n": 0}
    original = Scorer.score

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        _predict(ckpt, log, tmp_path / "p.parquet", stream=True, chunk_rows=200, explain=None)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []


def _cli(tmp_path, *args):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "predict.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        "scoring.progress=false",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_cli_writes_the_file(trained, tmp_path):
    _, ckpt, log, _ = trained
    proc = _cli(
        tmp_path,
        f"ckpt_path={ckpt}",
        "data=events",
        f"data.path={log}",
        "cutoff=2021-02-28",
        "output=out.csv",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = pd.read_csv(tmp_path / "out.csv")
    assert (out["cutoff"].str.startswith("2021-02-28")).all() and len(out) > 100


@pytest.mark.parametrize(
    "case",
    [
        "missing_checkpoint",
        "not_a_checkpoint",
        "missing_amount",
        "cutoff_outside",
        "bad_accelerator",
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(trained, tmp_path, case):
    _, ckpt, log, _ = trained
    args = [f"ckpt_path={ckpt}", "data=events", f"data.path={log}", "output=out.parquet"]
    message = {
        "missing_checkpoint": "not found",
        "not_a_checkpoint": "cannot load checkpoint",
        "missing_amount": "the data lacks",
        "cutoff_outside": "outside the data",
        "bad_accelerator": "accelerator",
    }[case]
    if case == "missing_checkpoint":
        args[0] = f"ckpt_path={tmp_path / 'nope.ckpt'}"
    elif case == "not_a_checkpoint":
        (tmp_path / "junk.ckpt").write_text("not a checkpoint")
        args[0] = f"ckpt_path={tmp_path / 'junk.ckpt'}"
    elif case == "missing_amount":
        pd.read_csv(log).drop(columns=["amount"]).to_csv(tmp_path / "log.csv", index=False)
        args[2] = f"data.path={tmp_path / 'log.csv'}"
    elif case == "cutoff_outside":
        args.append("cutoff=2030-01-01")
    elif case == "bad_accelerator":
        args.append("scoring.accelerator=tpu")
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.parquet").exists() and not list(tmp_path.glob(".out*"))
    assert not (tmp_path / "run").exists()


def test_no_eligible_user_is_a_bad_input_and_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="no eligible user"):
        write_predictions(iter([]), tmp_path / "p.parquet")
    assert list(tmp_path.iterdir()) == []


def test_four_shards_concatenated_are_the_whole_file(trained, tmp_path):
    _, ckpt, log, _ = trained
    _predict(ckpt, log, tmp_path / "whole.parquet", explain=None)
    whole = pd.read_parquet(tmp_path / "whole.parquet").set_index("user_id").sort_index()
    parts = []
    for i in range(4):
        _predict(ckpt, log, tmp_path / f"s{i}.parquet", explain=None, shard=f"{i}/4")
        parts.append(pd.read_parquet(tmp_path / f"s{i}.parquet"))
    assert all(len(p) for p in parts)  # every shard holds some of the 300 users
    joined = pd.concat(parts).set_index("user_id").sort_index()
    assert joined.index.is_unique and list(joined.index) == list(whole.index)
    pd.testing.assert_frame_equal(joined, whole, rtol=1e-5)
    for bad in ("4/4", "1/0", "a/b", "-1/2"):
        with pytest.raises(DataError, match="scoring.shard"):
            _predict(ckpt, log, tmp_path / "bad.parquet", explain=None, shard=bad)
    assert not (tmp_path / "bad.parquet").exists()


def test_bf16_autocast_stays_close_to_fp32_and_a_bad_precision_is_refused(trained, tmp_path):
    _, ckpt, log, _ = trained
    _predict(ckpt, log, tmp_path / "fp32.parquet", explain=None)
    _predict(ckpt, log, tmp_path / "bf16.parquet", explain=None, precision="bf16-mixed")
    fp32, bf16 = (pd.read_parquet(tmp_path / f"{p}.parquet") for p in ("fp32", "bf16"))
    assert list(fp32["user_id"]) == list(bf16["user_id"])
    gap = (fp32["p_churn"] - bf16["p_churn"]).abs()
    assert gap.max() < 0.02 and gap.max() > 0  # bf16 did run, and within its precision
    with pytest.raises(DataError, match="scoring.precision"):
        _predict(ckpt, log, tmp_path / "bad.parquet", explain=None, precision="16")
    assert not (tmp_path / "bad.parquet").exists()
