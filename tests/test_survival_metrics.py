"""Survival metrics: hand-checked cases, naive loops, torchsurv where installed, undefined -> NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lifelines.utils import concordance_index

from seqchurn.bootstrap import paired_bootstrap
from seqchurn.errors import DataError
from seqchurn.metrics import UndefinedMetricWarning
from seqchurn.survival_metrics import (
    Censoring,
    brier_at,
    ibs_rows,
    integrated_brier,
    interpolate,
    restricted_mean,
    survival_scores,
    td_auc,
    uno_c,
)

TIMES = np.array([0.0, 30.0, 60.0, 90.0, 180.0])


def _random_data(n=300, seed=0):
    """Continuous times with random censoring, and curves from a noisy exponential model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(50 * np.exp(0.5 * x))
    t_cens = rng.uniform(10, 200, size=n)
    tau, observed = np.minimum(t_event, t_cens), t_event <= t_cens
    scale = 50 * np.exp(0.4 * x[:, None] + rng.normal(0, 0.3, (n, 1)))
    return np.exp(-TIMES[None] / scale), tau, observed


def _snapshot():
    """A one-cutoff snapshot censored at m = 90: churned at 0, at 45, at 90, or censored at 90."""
    tau = np.array([0, 0, 45, 90, 90, 90], float)
    observed = np.array([1, 1, 1, 1, 0, 0], bool)
    surv = np.array(
        [
            [0.2, 0.1, 0.1, 0.1, 0.1],
            [0.6, 0.5, 0.4, 0.3, 0.2],
            [0.9, 0.8, 0.4, 0.3, 0.2],
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.9, 0.9, 0.8, 0.8, 0.7],
            [0.5, 0.5, 0.5, 0.5, 0.5],
        ]
    )
    return surv, tau, observed


def test_censoring_weights_of_one_cutoff_are_one_up_to_m_and_zero_after():
    _, tau, observed = _snapshot()
    cens = Censoring(tau, observed)
    np.testing.assert_array_equal(cens.at([0, 45, 90, 90.5, 180]), [1, 1, 1, 0, 0])
    assert cens.max_time == 90


def test_brier_and_auc_hand_computed_at_m():
    surv, tau, observed = _snapshot()
    # K = 1 up to m: the plain Brier of S(90) against "still active after 90 days".
    s90 = surv[:, 3]
    alive = np.array([0, 0, 0, 0, 1, 1])
    assert brier_at(surv, TIMES, tau, observed, 90) == pytest.approx(np.mean((s90 - alive) ** 2))
    # Cases (churned by 90) risk 0.9, 0.7, 0.7, 0.4; controls 0.2, 0.5: 2 + 2 + 2 + 1 of 8.
    assert td_auc(surv, TIMES, tau, observed, 90) == pytest.approx(7 / 8)
    # At 45 days (half-way along the 30-60 bin) row 2 has churned and S is interpolated.
    s45 = interpolate(surv, TIMES, 45)[:, 0]
    np.testing.assert_allclose(s45[:3], [0.1, 0.45, 0.6])
    alive45 = np.array([0, 0, 0, 1, 1, 1])
    assert brier_at(surv, TIMES, tau, observed, 45) == pytest.approx(np.mean((s45 - alive45) ** 2))


def test_integrated_brier_stops_at_m_and_matches_a_fine_grid():
    surv, tau, observed = _snapshot()
    rows, t_max = ibs_rows(surv, TIMES, tau, observed)
    assert t_max == 90 and rows.shape == (6,)
    grid = np.linspace(0, 90, 90 * 40 + 1)
    values = [brier_at(surv, TIMES, tau, observed, t) for t in grid]
    expected = np.trapezoid(values, grid) / 90
    assert integrated_brier(surv, TIMES, tau, observed) == pytest.approx(expected, abs=1e-4)
    assert rows.mean() == pytest.approx(integrated_brier(surv, TIMES, tau, observed))


def test_ibs_with_random_censoring_equals_a_naive_loop():
    surv, tau, observed = _random_data(n=60, seed=1)
    cens = Censoring(tau, observed)
    t_max = min(TIMES[-1], cens.max_time)
    grid = np.linspace(0, t_max, 1001)
    naive = []
    for t in grid:  # the textbook IPCW Brier score, one row at a time
        total = 0.0
        for i in range(len(tau)):
            s = np.interp(t, TIMES, surv[i])
            if observed[i] and tau[i] <= t:
                total += s**2 / cens.at(tau[i])
            elif tau[i] > t:
                total += (1 - s) ** 2 / cens.at(t)
        naive.append(total / len(tau))
    expected = np.trapezoid(naive, grid) / t_max
    assert integrated_brier(surv, TIMES, tau, observed) == pytest.approx(expected, rel=2e-3)


def test_uno_c_is_harrell_when_nothing_is_censored_before_m():
    surv, tau, observed = _snapshot()
    later = restricted_mean(surv, TIMES)
    assert uno_c(later, tau, observed) == pytest.approx(concordance_index(tau, later, observed))


def test_estimators_match_torchsurv():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsurv")
    from torchsurv.metrics.auc import Auc
    from torchsurv.metrics.brier_score import BrierScore
    from torchsurv.metrics.cindex import ConcordanceIndex
    from torchsurv.stats.ipcw import get_ipcw

    surv, tau, observed = _random_data()
    horizons = np.array([17.3, 45.1, 88.7, 120.2])  # no censoring time falls on one
    event, time = torch.tensor(observed), torch.tensor(tau)
    w = get_ipcw(event, time).double()
    w_new = get_ipcw(event, time, torch.tensor(horizons)).double()
    s_at = torch.tensor(interpolate(surv, TIMES, horizons))
    new = torch.tensor(horizons)
    brier = BrierScore()(s_at, event, time, new_time=new, weight=w, weight_new_time=w_new)
    auc = Auc()(1 - s_at, event, time, new_time=new, weight=w, weight_new_time=w_new)
    later = restricted_mean(surv, TIMES)
    uno = ConcordanceIndex()(torch.tensor(-later), event, time, weight=w)
    ours_brier = [brier_at(surv, TIMES, tau, observed, t) for t in horizons]
    ours_auc = [td_auc(surv, TIMES, tau, observed, t) for t in horizons]
    np.testing.assert_allclose(ours_brier, brier.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours_auc, auc.numpy(), rtol=1e-5)
    assert uno_c(later, tau, observed) == pytest.approx(float(uno), rel=1e-5)


def test_beyond_the_observable_horizon_is_nan_with_a_warning():
    surv, tau, observed = _snapshot()
    with pytest.warns(UndefinedMetricWarning, match="180 days is beyond the observable"):
        scores = survival_scores(surv, TIMES, tau, observed)
    assert np.isnan(scores["td_auc_180"])
    assert np.isfinite(
        [scores["ibs"], scores["td_auc_30"], scores["td_auc_90"], scores["uno_c"]]
    ).all()
    with pytest.warns(UndefinedMetricWarning, match="beyond the observable"):
        assert np.isnan(brier_at(surv, TIMES, tau, observed, 120))
    with pytest.warns(UndefinedMetricWarning, match="outside the predicted curve"):
        assert np.isnan(td_auc(surv[:, :3], TIMES[:3], tau, observed, 75))


def test_undefined_subsets_are_nan_with_a_warning():
    surv, tau, observed = _snapshot()
    everyone_churned = np.ones(6, bool)
    with pytest.warns(UndefinedMetricWarning, match="no churned or no active row"):
        assert np.isnan(td_auc(surv, TIMES, np.zeros(6), everyone_churned, 30))
    with pytest.warns(UndefinedMetricWarning, match="no admissible pair"):
        assert np.isnan(uno_c(np.arange(6.0), tau, np.zeros(6, bool)))
    with pytest.warns(UndefinedMetricWarning, match="no observable time"):
        assert np.isnan(integrated_brier(surv[:, :1], TIMES[:1], tau, observed))


def test_bad_input_is_a_data_error():
    surv, tau, observed = _snapshot()
    with pytest.raises(DataError, match="surv has shape"):
        survival_scores(surv[:, :3], TIMES, tau, observed)
    with pytest.raises(DataError, match="start at 0"):
        survival_scores(surv, TIMES + 1, tau, observed)
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        survival_scores(surv * 2, TIMES, tau, observed)
    with pytest.raises(DataError, match="tau must be"):
        survival_scores(surv, TIMES, tau - 100, observed)


def test_bootstrap_ibs_is_the_difference_of_row_means():
    surv, tau, observed = _random_data(n=200, seed=2)
    worse = np.clip(surv + 0.15, 0, 1)
    a, _ = ibs_rows(surv, TIMES, tau, observed)
    b, _ = ibs_rows(worse, TIMES, tau, observed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = paired_bootstrap(
            [observed.astype(int)],
            [np.arange(len(tau))],
            [[a]],
            [[b]],
            metric="ibs",
            n_draws=200,
        )
    assert res["mean_diff"] == pytest.approx(a.mean() - b.mean())
    assert res["hi"] < 0  # the curve shifted up is clearly worse
