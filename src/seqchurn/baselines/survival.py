"""Time-to-churn baselines (DESIGN section 8): Cox proportional hazards and Kaplan-Meier (lifelines).

Both fit on the training snapshots' (tau, observed), whose labels end by the test cutoff, and
give P(tau > d) at the head's bin edges for the survival metrics. The Cox model reads the
summary features of `trees.SummaryBaseline` (log1p, standardized on training rows), so it
sees what the logistic-regression baseline sees. Its coefficients come from lifelines'
partial likelihood; its baseline survival is re-estimated per bin (below), since lifelines'
Breslow estimate assumes small hazard steps, and 80-90% of the rows churn at tau = 0 at once:
on simulated BG/NBD customers it put the mean predicted churn of its own training rows at
0.56 for a churn rate of 0.86 (the grouped baseline: 0.86). Kaplan-Meier sees nothing but the labels
and is the floor: one curve for everyone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from scipy.optimize import brentq
from sklearn.preprocessing import StandardScaler

from seqchurn.baselines.trees import SummaryBaseline, check_label_windows
from seqchurn.data.labels import to_date, to_day
from seqchurn.errors import DataError

# A small ridge keeps the Newton steps stable on the correlated spend and count features.
COX_PENALIZER = 0.01


def check_tau_windows(snapshots: pd.DataFrame, test_cutoff, horizon_days: int, what: str) -> None:
    """Refuse snapshots whose time to churn was confirmed after the test cutoff.

    An onset at C + tau is confirmed H days later, and a censored tau is the last edge
    confirmed; either way C + tau + H is the last day the label read (DESIGN section 3).
    """
    check_label_windows(snapshots, test_cutoff, horizon_days, what)
    for col in ("tau", "observed"):
        if col not in snapshots.columns:
            raise DataError(f"{what} snapshots have no time-to-churn column {col!r}")
    tc = to_day(test_cutoff)
    read = snapshots["cutoff"].to_numpy(np.int64) + snapshots["tau"].to_numpy() + horizon_days
    if (read > tc).any():
        raise DataError(
            f"{what} snapshot labels read up to {to_date(int(read.max()))}, after the test "
            f"cutoff {to_date(tc)}: test-period data may not fit a baseline"
        )


def _durations(snapshots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return snapshots["tau"].to_numpy(np.float64), snapshots["observed"].to_numpy(bool)


class KaplanMeierBaseline:
    """One Kaplan-Meier curve of the training snapshots' tau, the same for every customer."""

    def __init__(self, horizon_days: int = 90):
        self.horizon_days = int(horizon_days)
        self.fitter: KaplanMeierFitter | None = None

    def fit(self, train_snapshots: pd.DataFrame, test_cutoff) -> "KaplanMeierBaseline":
        """Fit on labeled training snapshots (`cutoff`, `y`, `tau`, `observed`)."""
        check_tau_windows(train_snapshots, test_cutoff, self.horizon_days, "training")
        tau, observed = _durations(train_snapshots)
        self.fitter = KaplanMeierFitter().fit(tau, event_observed=observed)
        return self

    def predict_survival(self, n: int, days: Sequence[float]) -> np.ndarray:
        """(n, D) P(tau > d), the same row for each of n customers."""
        if self.fitter is None:
            raise RuntimeError("KaplanMeierBaseline.predict_survival called before fit")
        s = self.fitter.survival_function_at_times(np.asarray(days, np.float64)).to_numpy()
        return np.broadcast_to(s, (n, len(s))).copy()


def grouped_baseline(
    risk: np.ndarray, tau: np.ndarray, observed: np.ndarray, edges: Sequence[float]
) -> np.ndarray:
    """Baseline P(tau > edges[k]) of a proportional-hazards model grouped into the head's bins.

    In bin k a row at risk survives with q_k ** risk; q_k makes the expected survivors among
    the rows followed through the bin equal the observed ones (the grouped-time Cox model of
    Kalbfleisch and Prentice). Censoring sits on bin edges (DESIGN section 3), so every row
    at risk is either followed through a bin or censored at its start: (N,) x3 -> (K,).
    """
    q = np.ones(len(edges))
    lo = -np.inf
    for k, e in enumerate(edges):
        at_risk = tau > lo
        died = at_risk & observed & (tau <= e)
        survived = at_risk & ((tau > e) | (~observed & (tau >= e)))
        r, target = risk[died | survived], float(survived.sum())
        if not died.any():
            q[k] = 1.0
        elif target == 0:
            q[k] = 0.0
        else:  # sum of exp(-h r) falls from len(r) at h = 0 towards 0: one root in h
            gap = lambda h: np.exp(-h * r).sum() - target  # noqa: E731
            hi = 1.0
            while gap(hi) > 0:
                hi *= 4.0
            q[k] = np.exp(-brentq(gap, 0.0, hi, xtol=1e-12))
        lo = e
    return np.cumprod(q)


class CoxBaseline:
    """Cox proportional hazards on the summary features, fitted on labeled training snapshots.

    Args:
        edges: the head's finite bin edges (days, edges[0] = 0), where it gives P(tau > d).
    """

    def __init__(
        self,
        edges: Sequence[float],
        activity_event_types: Sequence[str] | None = None,
        horizon_days: int = 90,
        penalizer: float = COX_PENALIZER,
    ):
        self.edges = [float(e) for e in edges]
        self.horizon_days = int(horizon_days)
        self.penalizer = float(penalizer)
        self.summary = SummaryBaseline(
            kind="logreg", activity_event_types=activity_event_types, horizon_days=horizon_days
        )
        self.fitter: CoxPHFitter | None = None

    def _matrix(self, events: pd.DataFrame, snapshots: pd.DataFrame, fit: bool) -> pd.DataFrame:
        raw = self.summary.features(events, snapshots, fit_types=fit).to_numpy(np.float64)
        x = np.log1p(np.clip(raw, 0, None))
        if fit:
            self.scaler_ = StandardScaler().fit(x)
            # A feature constant on the training rows says nothing and makes the fit singular.
            self.keep_ = np.flatnonzero(self.scaler_.scale_ > 1e-12)
        x = self.scaler_.transform(x)[:, self.keep_]
        return pd.DataFrame(x, columns=[f"f{i}" for i in self.keep_])

    def fit(
        self, events: pd.DataFrame, train_snapshots: pd.DataFrame, test_cutoff
    ) -> "CoxBaseline":
        """Fit on training snapshots; features read only events on or before each cutoff."""
        check_tau_windows(train_snapshots, test_cutoff, self.horizon_days, "training")
        frame = self._matrix(events, train_snapshots, fit=True)
        tau, observed = _durations(train_snapshots)
        frame["tau"], frame["observed"] = tau, observed
        self.fitter = CoxPHFitter(penalizer=self.penalizer).fit(
            frame, duration_col="tau", event_col="observed"
        )
        risk = self._risk(frame)
        self.baseline_ = grouped_baseline(risk, tau, observed, self.edges)
        return self

    def _risk(self, frame: pd.DataFrame) -> np.ndarray:
        return self.fitter.predict_partial_hazard(frame).to_numpy(np.float64)

    def predict_survival(self, events: pd.DataFrame, snapshots: pd.DataFrame) -> np.ndarray:
        """(N, K) P(tau > edges[k]) for each snapshot row, in row order."""
        if self.fitter is None:
            raise RuntimeError("CoxBaseline.predict_survival called before fit")
        risk = self._risk(self._matrix(events, snapshots, fit=False))
        with np.errstate(divide="ignore"):  # a baseline of 0 stays 0
            return np.exp(risk[:, None] * np.log(self.baseline_)[None, :])
