"""Tests of the BG/NBD generator and its closed-form oracle (DESIGN section 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from seqchurn.simulate.bgnbd import CDNOW_PARAMS, bgnbd_oracle, simulate_bgnbd

START = pd.Timestamp("2020-01-01")
CUTOFF = (START + pd.Timedelta(weeks=40)).normalize()
H = 90
N_CALIB = 20_000


@pytest.fixture(scope="module")
def sim() -> tuple[pd.DataFrame, pd.DataFrame]:
    """One large simulation shared by the statistical tests."""
    return simulate_bgnbd(N_CALIB, seed=0)


@pytest.fixture(scope="module")
def scored(sim) -> pd.DataFrame:
    """Oracle at CUTOFF joined with the observed label, recency and true alive state."""
    events, truth = sim
    out = bgnbd_oracle(events, CUTOFF, H, start=START)
    day = events["timestamp"].dt.floor("D")
    in_window = (day > CUTOFF) & (day <= CUTOFF + pd.Timedelta(days=H))
    returners = set(events.loc[in_window, "user_id"])
    last_day = events[day <= CUTOFF].groupby("user_id")["timestamp"].max().dt.floor("D")
    out["y"] = (~out["user_id"].isin(returners)).astype(int).to_numpy()
    out["recency"] = (CUTOFF - last_day.reindex(out["user_id"])).dt.days.to_numpy()
    t_c = (CUTOFF + pd.Timedelta(days=1) - START) / pd.Timedelta(weeks=1)
    death = truth.set_index("user_id")["death_week"].reindex(out["user_id"]).to_numpy()
    out["alive"] = (death > t_c).astype(int)
    return out


def _decile_gaps(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per decile of p: |mean(y) - mean(p)| and the binomial standard error of mean(y)."""
    order = np.argsort(p, kind="stable")
    gaps, ses = [], []
    for idx in np.array_split(order, 10):
        gaps.append(abs(y[idx].mean() - p[idx].mean()))
        ses.append(np.sqrt(np.sum(p[idx] * (1 - p[idx]))) / idx.size)
    return np.array(gaps), np.array(ses)


def test_same_seed_same_data_other_seed_differs():
    ev1, tr1 = simulate_bgnbd(500, seed=3)
    ev2, tr2 = simulate_bgnbd(500, seed=3)
    pd.testing.assert_frame_equal(ev1, ev2)
    pd.testing.assert_frame_equal(tr1, tr2)
    ev3, _ = simulate_bgnbd(500, seed=4)
    assert not ev1["timestamp"].equals(ev3["timestamp"])


def test_contract_columns_and_dtypes():
    events, truth = simulate_bgnbd(1_000, seed=1, horizon_weeks=30)
    assert list(events.columns[:5]) == ["user_id", "timestamp", "event_type", "amount", "quantity"]
    assert events["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert events["user_id"].map(type).eq(str).all()
    assert (events["event_type"] == "purchase").all()
    assert events["amount"].dtype == np.float64 and (events["amount"] >= 0).all()
    q = events["quantity"]
    assert q.dtype == np.float64 and (q >= 1).all() and (q == q.round()).all()
    # Sorted by user then time, and nothing after the simulated horizon.
    assert events.equals(events.sort_values(["user_id", "timestamp"], kind="stable"))
    assert events["timestamp"].max() < START + pd.Timedelta(weeks=30)
    # Sub-day time is kept (continuous time, not whole days).
    assert (events["timestamp"] != events["timestamp"].dt.floor("D")).mean() > 0.99
    assert list(truth.columns) == ["user_id", "T0_weeks", "lam", "p", "death_week"]
    assert set(events["user_id"]) == set(truth["user_id"])  # everyone buys at T0


def test_dropout_only_after_a_repeat_purchase(sim):
    events, truth = sim
    t = (events["timestamp"] - START) / pd.Timedelta(weeks=1)
    per_user = t.groupby(events["user_id"]).agg(["count", "min", "max"]).reindex(truth["user_id"])
    np.testing.assert_allclose(per_user["min"].to_numpy(), truth["T0_weeks"].to_numpy(), atol=1e-9)
    dead = np.isfinite(truth["death_week"].to_numpy())
    assert 0.2 < dead.mean() < 0.9
    # A dead user died right after its last purchase, which was a repeat one.
    assert (per_user["count"].to_numpy()[dead] >= 2).all()
    last = per_user["max"].to_numpy()[dead]
    np.testing.assert_allclose(last, truth["death_week"].to_numpy()[dead], atol=1e-9)
    # One-purchase users can never have dropped out.
    assert not dead[per_user["count"].to_numpy() == 1].any()


def test_oracle_calendar_alignment_hand_case():
    r, alpha, a, b = (CDNOW_PARAMS[k] for k in ("r", "alpha", "a", "b"))
    c = pd.Timestamp("2020-03-01")
    events = pd.DataFrame(
        {
            "user_id": ["late", "x1", "x1", "x1", "future"],
            "timestamp": pd.to_datetime(
                [
                    "2020-03-01 23:00",  # last hour of day C: in the history
                    "2020-01-01 00:00",
                    "2020-01-15 00:00",
                    "2020-03-02 00:00",  # first instant after day C: not in the history
                    "2020-03-02 00:00",
                ]
            ),
            "event_type": "purchase",
        }
    )
    out = bgnbd_oracle(events, "2020-03-01", 14, start="2020-01-01").set_index("user_id")
    assert list(out.index) == ["late", "x1"]
    hw = 2.0
    big_t = 1.0 / 168.0  # one hour, in weeks
    assert out.loc["late", "p_alive"] == 1.0
    late = ((alpha + big_t) / (alpha + big_t + hw)) ** r
    assert out.loc["late", "p_churn_oracle"] == pytest.approx(late)
    big_t = ((c + pd.Timedelta(days=1)) - pd.Timestamp("2020-01-01")) / pd.Timedelta(weeks=1)
    x, t_x = 1, 2.0
    p_alive = 1.0 / (1.0 + a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))
    expected = (1 - p_alive) + p_alive * ((alpha + big_t) / (alpha + big_t + hw)) ** (r + x)
    assert out.loc["x1", "p_alive"] == pytest.approx(p_alive)
    assert out.loc["x1", "p_churn_oracle"] == pytest.approx(expected)


def test_oracle_is_calibrated(scored):
    p, y = scored["p_churn_oracle"].to_numpy(), scored["y"].to_numpy()
    assert len(scored) == N_CALIB  # every user was acquired before week 12 < cutoff
    se = np.sqrt(np.sum(p * (1 - p))) / p.size
    assert abs(p.mean() - y.mean()) < 3 * se
    # 4 SE per decile keeps the family-wise false-alarm rate of 10 bins under 0.1%.
    gaps, ses = _decile_gaps(p, y)
    assert (gaps < 4 * ses + 1e-3).all(), (gaps, ses)


def test_p_alive_matches_true_alive_state(scored):
    # Monte-Carlo check of the P_alive formula against the simulated hidden state.
    p, alive = scored["p_alive"].to_numpy(), scored["alive"].to_numpy()
    se = np.sqrt(np.sum(p * (1 - p))) / p.size
    assert abs(p.mean() - alive.mean()) < 3 * se
    gaps, ses = _decile_gaps(p, alive)
    assert (gaps < 4 * ses + 1e-3).all(), (gaps, ses)


def test_oracle_beats_recency(scored):
    y = scored["y"].to_numpy()
    auc_oracle = roc_auc_score(y, scored["p_churn_oracle"])
    auc_recency = roc_auc_score(y, scored["recency"])  # long silence = churn
    # Paired bootstrap over users: the gain must be clearly positive, not seed noise.
    rng = np.random.default_rng(0)
    p, rec = scored["p_churn_oracle"].to_numpy(), scored["recency"].to_numpy()
    diffs = []
    for _ in range(50):
        i = rng.integers(0, y.size, y.size)
        diffs.append(roc_auc_score(y[i], p[i]) - roc_auc_score(y[i], rec[i]))
    assert auc_oracle > auc_recency
    assert np.mean(diffs) - 2 * np.std(diffs) > 0, (auc_oracle, auc_recency, np.std(diffs))
