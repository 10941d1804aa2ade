"""Baselines: the BG/NBD fitter against the published fit, and the peer figures of protocol cdnow-h90."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from seqchurn.baselines.bgnbd import (
    BGNBDBaseline,
    BGNBDParams,
    bgnbd_loglik_terms,
    fit_bgnbd,
    p_alive,
    p_no_activity,
    rfm_summary,
)
from seqchurn.baselines.rfm import LogisticRFM, recency_score, rfm_features
from seqchurn.data.events import load_events
from seqchurn.data.labels import make_snapshots, to_day
from seqchurn.simulate.bgnbd import CDNOW_PARAMS, bgnbd_oracle

SUMMARY_CSV = (
    Path(__file__).parent / "data" / "cdnow_customers_summary.csv"
)  # the published BG/NBD sample
PUBLISHED = BGNBDParams(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259, loglik=-9582.43)
H = 90

# DESIGN section 8 peer table: test cutoff -> (train cutoff, AUROC of logistic RFM, recency, BG/NBD).
PEER_AUROC = {
    "1997-09-30": ("1997-06-30", 0.775, 0.763, 0.764),
    "1997-12-31": ("1997-09-30", 0.806, 0.793, 0.793),
}


@pytest.fixture(scope="module")
def cdnow():
    events, _ = load_events("cdnow", merge_same_day=True)
    return events


def test_fit_reproduces_published_bgnbd():
    d = pd.read_csv(SUMMARY_CSV)
    fit = fit_bgnbd(d["frequency"], d["recency"], d["T"])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fit, name) == pytest.approx(getattr(PUBLISHED, name), abs=1e-3), name
    assert fit.loglik == pytest.approx(PUBLISHED.loglik, abs=0.01)
    terms = bgnbd_loglik_terms(fit.r, fit.alpha, fit.a, fit.b, d["frequency"], d["recency"], d["T"])
    assert float(terms.sum()) == pytest.approx(fit.loglik, abs=1e-6)


def test_p_alive_and_p_no_activity_hand_cases():
    params = PUBLISHED
    # No repeat purchase: the model has had no chance to drop the customer.
    assert p_alive(params, [0], [0.0], [30.0])[0] == 1.0
    # A repeat buyer silent for a long time is almost surely gone; a recent one much less so.
    stale, recent = p_alive(params, [5, 5], [2.0, 29.0], [30.0, 30.0])
    assert stale < 0.05 < 0.5 < recent < 1.0
    x, t_x, T, h = 2.0, 10.0, 30.0, 90 / 7
    alive = p_alive(params, [x], [t_x], [T])[0]
    expected = 1 / (
        1
        + params.a
        / (params.b + x - 1)
        * ((params.alpha + T) / (params.alpha + t_x)) ** (params.r + x)
    )
    assert alive == pytest.approx(expected, rel=1e-12)
    silent = ((params.alpha + T) / (params.alpha + T + h)) ** (params.r + x)
    assert p_no_activity(params, [x], [t_x], [T], h)[0] == pytest.approx(
        1 - alive + alive * silent, rel=1e-12
    )


def test_rfm_summary_definitions_match_the_oracle_time_alignment():
    day0 = to_day("2020-01-01")
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "c"],
            "day": day0 + np.array([0, 0, 7, 21, 3, 40]),  # a buys twice on day 0; c only after C
            "event_type": "purchase",
        }
    )
    events["timestamp"] = pd.to_datetime(events["day"], unit="D")
    cutoff = day0 + 27
    s = rfm_summary(events, cutoff)
    assert s["user_id"].tolist() == ["a", "b"]
    np.testing.assert_allclose(s["x"], [2.0, 0.0])  # repeat purchase days, same-day rows count once
    np.testing.assert_allclose(s["t_x"], [3.0, 0.0])
    np.testing.assert_allclose(s["T"], [4.0, 25 / 7])  # the cutoff day is included whole

    # With midnight timestamps and a day-level log the oracle sees the same (x, t_x, T).
    dedup = events.drop_duplicates(["user_id", "day"])
    oracle = bgnbd_oracle(dedup, cutoff, H, **CDNOW_PARAMS)
    params = BGNBDParams(**CDNOW_PARAMS)
    np.testing.assert_allclose(
        p_no_activity(params, s["x"], s["t_x"], s["T"], H / 7), oracle["p_churn_oracle"], rtol=1e-10
    )


@pytest.mark.parametrize("test_cutoff", sorted(PEER_AUROC))
def test_cdnow_h90_peer_auroc(cdnow, test_cutoff):
    train_cutoff, auc_logistic, auc_recency, auc_bgnbd = PEER_AUROC[test_cutoff]
    tc = to_day(test_cutoff)
    train = make_snapshots(cdnow, [to_day(train_cutoff)], H, tc, [0])
    test = make_snapshots(cdnow, [tc], H, int(cdnow["day"].max()), [0])
    y = test["y"].to_numpy()
    assert rfm_features(cdnow, test).shape == (len(test), 4)

    p_logistic = LogisticRFM().fit(cdnow, train).predict_proba(cdnow, test)
    assert roc_auc_score(y, p_logistic) == pytest.approx(auc_logistic, abs=0.005)
    assert roc_auc_score(y, recency_score(cdnow, test)) == pytest.approx(auc_recency, abs=0.005)

    bg = BGNBDBaseline().fit(cdnow, tc).predict(cdnow, tc, H)
    assert bg["user_id"].tolist() == test["user_id"].tolist()
    assert roc_auc_score(y, bg["p_churn"]) == pytest.approx(auc_bgnbd, abs=0.005)
