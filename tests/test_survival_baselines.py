"""Time-to-churn baselines: Cox, Kaplan-Meier and the BG/NBD curve; none reads the test period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from seqchurn.baselines.bgnbd import BGNBDBaseline, BGNBDParams, p_alive, p_silent_window
from seqchurn.baselines.bgnbd import p_no_activity
from seqchurn.baselines.survival import CoxBaseline, KaplanMeierBaseline, grouped_baseline
from seqchurn.data.events import clean_events
from seqchurn.data.labels import make_snapshots, to_day
from seqchurn.errors import DataError
from seqchurn.simulate.bgnbd import simulate_bgnbd
from seqchurn.survival_metrics import survival_scores

H = 90
EDGES = [0, 30, 60]
TEST_CUTOFF = to_day("2021-03-31")
TRAIN_CUTOFFS = [to_day("2020-09-30"), to_day("2020-10-31"), to_day("2020-12-31")]
PUBLISHED = BGNBDParams(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259)


@pytest.fixture(scope="module")
def data():
    raw, _ = simulate_bgnbd(n_users=1500, seed=3)
    events, _ = clean_events(raw.assign(event_type=raw["event_label"]))
    train = make_snapshots(events, TRAIN_CUTOFFS, H, TEST_CUTOFF, EDGES)
    test = make_snapshots(events, [TEST_CUTOFF], H, TEST_CUTOFF + H + 60, EDGES)
    return {"events": events, "train": train, "test": test}


@pytest.fixture(scope="module")
def cox(data):
    return CoxBaseline(EDGES).fit(data["events"], data["train"], TEST_CUTOFF)


def test_cox_and_km_give_a_curve_per_test_row(data, cox):
    n = len(data["test"])
    s_cox = cox.predict_survival(data["events"], data["test"])
    s_km = KaplanMeierBaseline().fit(data["train"], TEST_CUTOFF).predict_survival(n, EDGES)
    for s in (s_cox, s_km):
        assert s.shape == (n, len(EDGES)) and ((s >= 0) & (s <= 1)).all()
        assert (np.diff(s, axis=1) <= 1e-12).all()  # survival never rises
    assert np.ptp(s_km, axis=0).max() == 0  # the floor: one curve for everyone
    train_churn = data["train"]["y"].mean()
    assert s_km[0, 0] == pytest.approx(1 - train_churn)
    # The grouped baseline keeps Cox calibrated on its own rows at tau = 0, where Breslow's is not.
    s_train = cox.predict_survival(data["events"], data["train"])
    assert 1 - s_train[:, 0].mean() == pytest.approx(train_churn, abs=1e-6)
    tau, observed = data["test"]["tau"], data["test"]["observed"]
    assert (
        survival_scores(s_cox, EDGES, tau, observed)["ibs"]
        < survival_scores(s_km, EDGES, tau, observed)["ibs"]
    )


def test_grouped_baseline_is_kaplan_meier_when_every_risk_is_one():
    tau = np.array([0, 0, 0, 30, 45, 60, 60, 60], float)
    observed = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
    s = grouped_baseline(np.ones(8), tau, observed, [0, 30, 60])
    np.testing.assert_allclose(s, [5 / 8, 4 / 8, 2 / 8])


def test_events_after_the_test_cutoff_change_no_baseline(data, cox):
    events = data["events"]
    early = events[events["day"] <= TEST_CUTOFF].reset_index(drop=True)
    refit = CoxBaseline(EDGES).fit(early, data["train"], TEST_CUTOFF)
    np.testing.assert_allclose(
        refit.predict_survival(early, data["test"]),
        cox.predict_survival(events, data["test"]),
        atol=1e-10,
    )


def test_fits_refuse_labels_read_past_the_test_cutoff(data):
    # The test snapshot's labels read H days (and more) past the test cutoff.
    with pytest.raises(DataError, match="test-period"):
        CoxBaseline(EDGES).fit(data["events"], data["test"], TEST_CUTOFF)
    with pytest.raises(DataError, match="test-period"):
        KaplanMeierBaseline().fit(data["test"], TEST_CUTOFF)
    # A training snapshot whose tau was confirmed with events after the test cutoff.
    late = make_snapshots(data["events"], TRAIN_CUTOFFS[2:], H, TEST_CUTOFF + 60, EDGES)
    assert (late["cutoff"] + late["tau"] + H > TEST_CUTOFF).any()
    with pytest.raises(DataError, match="labels read up to"):
        KaplanMeierBaseline().fit(late, TEST_CUTOFF)
    with pytest.raises(DataError, match="no time-to-churn column"):
        KaplanMeierBaseline().fit(data["train"].drop(columns="tau"), TEST_CUTOFF)


def test_bgnbd_silent_window_matches_quadrature_and_p_churn():
    x, t_x, T = np.array([0.0, 1, 3, 10]), np.array([0.0, 5, 20, 30]), np.array([10.0, 30, 40, 38])
    h, starts = H / 7, np.array([0, 30, 90, 180]) / 7
    got = p_silent_window(PUBLISHED, x, t_x, T, starts, h)
    np.testing.assert_allclose(got[:, 0], p_no_activity(PUBLISHED, x, t_x, T, h), rtol=1e-12)
    assert (np.diff(got, axis=1) >= 0).all()  # a later window is more likely silent
    p = PUBLISHED
    for i in range(len(x)):
        alive = p_alive(p, x[i : i + 1], t_x[i : i + 1], T[i : i + 1])[0]
        beta, shape, rate = stats.beta(p.a, p.b + x[i]), p.r + x[i], p.alpha + T[i]
        for j, s in enumerate(starts):

            def buys_after_window_start(q):
                stays = (rate / (rate + q * s)) ** shape
                return (stays - (rate / (rate + q * s + h)) ** shape) * beta.pdf(q)

            ref = 1 - alive * integrate.quad(buys_after_window_start, 0, 1, limit=200)[0]
            assert got[i, j] == pytest.approx(ref, rel=1e-7)


def test_bgnbd_survival_is_one_minus_p_churn_at_zero(data):
    bg = BGNBDBaseline().fit(data["events"], TEST_CUTOFF)
    users, surv = bg.predict_survival(data["events"], TEST_CUTOFF, H, EDGES)
    p = bg.predict(data["events"], TEST_CUTOFF, H).set_index("user_id")["p_churn"]
    assert surv.shape == (len(users), len(EDGES))
    np.testing.assert_allclose(surv[:, 0], 1 - p.reindex(pd.Index(users)).to_numpy(), atol=1e-12)
